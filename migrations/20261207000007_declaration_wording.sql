-- A Gift Aid declaration keeps the words the donor agreed to (a version id and the text, with
-- the charity's name in it) and where it was made, so a claim can show HMRC what each donor
-- declared. Declarations made before this kept neither: their source says so.
ALTER TABLE gift_aid_declarations
    ADD COLUMN wording_version text,
    ADD COLUMN wording         text,
    ADD COLUMN source          text NOT NULL DEFAULT 'donation_form'
        CHECK (source IN ('donation_form', 'later_form'));
UPDATE gift_aid_declarations SET source = 'later_form' WHERE donation_id IS NULL;
ALTER TABLE gift_aid_declarations
    ALTER COLUMN source DROP DEFAULT,
    ADD CONSTRAINT gift_aid_declarations_wording_check
        CHECK ((wording_version IS NULL) = (wording IS NULL));
