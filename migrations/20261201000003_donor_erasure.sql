-- Donor data protected: `quickdonate donors erase --email ADDRESS` removes a donor's personal
-- data. Their donations keep their amounts and ids (finance), and a gift already claimed in a
-- Gift Aid claim keeps the name and address HMRC requires; everything else reads `erased`.

-- When the donor's personal data was erased; NULL: never. An erased donation is never put on
-- a Gift Aid schedule again (its declaration is gone).
ALTER TABLE donations ADD COLUMN personal_data_erased_at timestamptz;
ALTER TABLE gift_aid_declarations ADD COLUMN personal_data_erased_at timestamptz;
