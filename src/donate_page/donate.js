// The quick-donate page's script. It uses only the public API, as any website would:
//   1. POST /v1/campaigns/{slug}/donations with an Idempotency-Key made once per attempt and
//      sent again, unchanged, when the same attempt is retried;
//   2. pay: the Stripe Payment Element with a real key, or the simulator's controls;
//   3. poll GET /v1/donations/{id}, backing off, until the webhook-confirmed status arrives.
// No donor data is stored in the browser or sent anywhere but our own API.
"use strict";

(function () {
  const page = document.getElementById("donate-page");
  if (!page) return;
  const config = page.dataset;
  const slug = config.slug;
  const currency = config.currency;
  const fees = {
    percentBps: Number(config.feePercentBps),
    fixed: Number(config.feeFixedAmount),
  };
  const $ = (id) => document.getElementById(id);
  const form = $("donation-form");

  // ---- Money -------------------------------------------------------------------------------

  // How many decimal places the currency's minor units make, as the server counts them (2 for
  // pounds, 0 for yen): the server's word, not the browser's, so both read amounts alike.
  const exponent = Number(config.exponent);
  const formatter = new Intl.NumberFormat("en-GB", {
    style: "currency",
    currency: currency.toUpperCase(),
    minimumFractionDigits: exponent,
    maximumFractionDigits: exponent,
  });
  const scale = 10 ** exponent;
  const money = (minor) => formatter.format(minor / scale);

  // The service's own fee model (src/donations/fees.rs): the fee on a charge, rounded up, and
  // the least extra that leaves the charity the whole gift once that fee is taken.
  const feeOn = (total) => Math.ceil((total * fees.percentBps) / 10000) + fees.fixed;
  function coverFor(amount) {
    if (fees.percentBps === 0 && fees.fixed === 0) return 0;
    let total = Math.max(amount, Math.floor(((amount + fees.fixed) * 10000) / (10000 - fees.percentBps)) - 2);
    while (total - feeOn(total) < amount) total += 1;
    return total - amount;
  }

  // "12.50", "£12.50" or "1,250" in major units to minor units; null if it is not an amount. A
  // comma only groups thousands: "12,50" is refused, never read as 1250.
  function parseAmount(text) {
    const cleaned = text.replace(/[£€$\s]/g, "");
    const fraction = exponent === 0 ? "" : "(\\.\\d{1," + exponent + "})?";
    const pattern = new RegExp("^(\\d+|\\d{1,3}(,\\d{3})+)" + fraction + "$");
    if (!pattern.test(cleaned)) return null;
    const [whole, decimals = ""] = cleaned.replace(/,/g, "").split(".");
    return Number(whole) * scale + Number(decimals.padEnd(exponent, "0") || 0);
  }

  // ---- The form ----------------------------------------------------------------------------

  const otherField = $("other-amount-field");
  const otherInput = $("other-amount");
  const coverBox = $("cover-fees");
  const coverLabel = $("cover-fees-label");
  const giftAidBox = $("gift-aid-declared");

  // The chosen amount in minor units; undefined if none is chosen, null if "Other" is unreadable.
  function chosenAmount() {
    const choice = form.querySelector("input[name=amount-choice]:checked");
    if (!choice) return undefined;
    if (choice.value !== "other") return Number(choice.value);
    return otherInput.value.trim() === "" ? undefined : parseAmount(otherInput.value);
  }

  function showAmounts() {
    const choice = form.querySelector("input[name=amount-choice]:checked");
    otherField.hidden = !(choice && choice.value === "other");
    const amount = chosenAmount();
    if (amount && amount > 0) {
      const cover = coverFor(amount);
      coverLabel.textContent = "Add " + money(cover) + " to cover the card fee, so the charity receives your whole " + money(amount);
      const total = coverBox.checked ? amount + cover : amount;
      $("total").textContent = "You will give " + money(total) + ".";
    } else {
      coverLabel.textContent = "Add the card fee, so the charity receives your whole gift";
      $("total").textContent = "";
    }
  }

  form.addEventListener("change", showAmounts);
  otherInput.addEventListener("input", showAmounts);
  // Choosing "Other amount" takes the donor straight to its field.
  $("amount-other").addEventListener("change", () => {
    showAmounts();
    otherInput.focus();
  });
  if (giftAidBox) {
    giftAidBox.addEventListener("change", () => {
      $("gift-aid-address").hidden = !giftAidBox.checked;
    });
  }

  const value = (id) => $(id).value.trim();

  // The request body as the API takes it, or the fields the page itself can tell are wrong.
  function readForm() {
    const errors = [];
    const amount = chosenAmount();
    if (amount === null) errors.push({ field: "amount", message: "Enter an amount like 12.50" });
    const body = {
      frequency: "one_off",
      currency: currency,
      donor: { first_name: value("first-name"), last_name: value("last-name"), email: value("email") },
      anonymous: $("anonymous").checked,
      cover_fees: coverBox.checked,
    };
    // With no amount chosen the API names the missing field, like every other one.
    if (amount !== undefined && amount !== null) body.amount = amount;
    if (giftAidBox && giftAidBox.checked) {
      body.gift_aid = {
        declared: true,
        house_name_or_number: value("gift-aid-house"),
        postcode: value("gift-aid-postcode"),
        country: value("gift-aid-country"),
      };
      if (value("gift-aid-title")) body.gift_aid.title = value("gift-aid-title");
    }
    return { body, errors };
  }

  // ---- Errors next to their fields ---------------------------------------------------------

  const summary = $("error-summary");

  function clearErrors() {
    summary.hidden = true;
    $("error-list").replaceChildren();
    for (const message of form.querySelectorAll("[data-error-for]")) {
      message.hidden = true;
      message.textContent = "";
    }
    for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  }

  // Shows each problem at its field and in the summary, whose links lead to the fields; focus
  // moves to the summary so that a screen reader reads it and a keyboard user starts there.
  function showErrors(errors, detail) {
    clearErrors();
    const list = $("error-list");
    for (const error of errors) {
      const message = form.querySelector('[data-error-for="' + CSS.escape(error.field) + '"]');
      const item = document.createElement("li");
      const text = label(error.field) + " " + error.message;
      if (message) {
        message.textContent = text;
        message.hidden = false;
        const input = inputFor(message);
        if (input) input.setAttribute("aria-invalid", "true");
        const link = document.createElement("a");
        link.href = "#" + (input ? input.id : message.id);
        link.textContent = text;
        link.addEventListener("click", (event) => {
          event.preventDefault();
          (input || message).focus();
        });
        item.append(link);
      } else {
        item.textContent = text;
      }
      list.append(item);
    }
    if (errors.length === 0 && detail) {
      const item = document.createElement("li");
      item.textContent = detail;
      list.append(item);
    }
    summary.hidden = false;
    summary.focus();
  }

  // The input a field's message describes.
  function inputFor(message) {
    if (message.id === "amount-error") {
      const choice = form.querySelector("input[name=amount-choice]:checked");
      return choice && choice.value === "other" ? otherInput : form.querySelector("input[name=amount-choice]");
    }
    return form.querySelector('[aria-describedby~="' + message.id + '"]:not(fieldset)');
  }

  const LABELS = {
    amount: "Amount:",
    currency: "Currency:",
    "donor.first_name": "First name:",
    "donor.last_name": "Last name:",
    "donor.email": "Email:",
    "gift_aid.title": "Title:",
    "gift_aid.house_name_or_number": "House name or number:",
    "gift_aid.postcode": "Postcode:",
    "gift_aid.country": "Country:",
  };
  const label = (field) => LABELS[field] || (field ? field + ":" : "");

  // ---- Creating the donation ---------------------------------------------------------------

  // One key per attempt: made for a body, and sent again while the same body is retried (after
  // a lost connection or a 5xx, whose retry is safe), never for a changed one.
  let attempt = null;
  let donation = null;
  const button = $("quick-donate");

  function newKey() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" + hex.slice(16, 20) + "-" + hex.slice(20);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (button.disabled) return;
    const { body, errors } = readForm();
    if (errors.length > 0) return showErrors(errors);
    const json = JSON.stringify(body);
    if (!attempt || attempt.json !== json) attempt = { json, key: newKey() };

    busy(button, true);
    say("Creating your donation…");
    let response;
    try {
      response = await fetch("/v1/campaigns/" + encodeURIComponent(slug) + "/donations", {
        method: "POST",
        headers: { "content-type": "application/json", "idempotency-key": attempt.key },
        body: json,
      });
    } catch (_) {
      busy(button, false);
      say("");
      return showErrors([], "We could not reach the server, and nothing was charged. Check your connection and press QUICK DONATE again.");
    }
    busy(button, false);
    say("");
    const answer = await response.json().catch(() => ({}));
    if (response.ok) {
      donation = answer;
      return startPayment();
    }
    // A refused request changed nothing; the next press is a new attempt with a new key. Only
    // what may succeed when retried as it is keeps the key: the same request still in flight,
    // a 429, a 5xx.
    const kind = String(answer.type || "").split("/").pop();
    if (response.status < 500 && response.status !== 429 && kind !== "idempotency-key-in-use") attempt = null;
    showErrors(answer.errors || [], problemForDonors(response.status, kind, answer.detail));
  });

  // What a donor is told of a problem: the API's own words are for developers.
  function problemForDonors(status, kind, detail) {
    switch (kind) {
      case "idempotency-key-in-use":
        return "Your donation is still being set up. Please press QUICK DONATE again in a moment.";
      case "too-many-attempts":
        return "There have been too many attempts from here. Please wait a few minutes, then try again. Nothing was charged.";
      case "captcha-required":
        return "We need to check that this is not an automated attempt, and this page cannot do that. Please donate through the charity's website, or try again later.";
      case "donation-abandoned":
        return "That donation was given up after waiting too long. Press QUICK DONATE to start a new one.";
      case "campaign-inactive":
        return "This campaign has closed and takes no more donations. Thank you for thinking of it.";
      case "validation":
        return detail || "Please check the form.";
    }
    if (status >= 500) return "Something went wrong on our side, and nothing was charged. Please press QUICK DONATE again.";
    return "Your donation could not be made. Please check the form and try again. Nothing was charged.";
  }

  function busy(control, on) {
    control.disabled = on;
    control.setAttribute("aria-busy", on ? "true" : "false");
  }

  const say = (text) => {
    $("status").textContent = text;
  };

  // ---- Paying ------------------------------------------------------------------------------

  let stripe = null;
  let elements = null;

  function startPayment() {
    clearErrors();
    form.hidden = true;
    let amount = money(donation.total_amount);
    if (donation.cover_fees_amount > 0) {
      amount += " (your " + money(donation.amount) + " gift and the " + money(donation.cover_fees_amount) + " card fee)";
    }
    $("payment-amount").textContent = amount;
    $("payment").hidden = false;
    if (config.payments === "stripe") mountStripe();
    $("payment-heading").focus();
  }

  function mountStripe() {
    if (elements) return;
    if (typeof window.Stripe !== "function") {
      $("payment").hidden = true;
      return showResult("The card form did not load", "Stripe's card form could not be loaded (a blocker or a lost connection?). Nothing was charged. Reload the page to try again.", false);
    }
    stripe = window.Stripe(donation.publishable_key);
    elements = stripe.elements({ clientSecret: donation.client_secret });
    elements.create("payment").mount("#payment-element");
    $("pay").addEventListener("click", async () => {
      busy($("pay"), true);
      const { error } = await stripe.confirmPayment({
        elements,
        redirect: "if_required",
        // Where Stripe sends the donor back after a payment method that leaves the page (a bank
        // redirect, say): this page again, told which donation to wait for.
        confirmParams: { return_url: returnUrl() },
      });
      busy($("pay"), false);
      if (error) return declined(error.message);
      waitForConfirmation();
    });
  }

  function returnUrl() {
    const url = new URL(location.href);
    url.search = "";
    url.searchParams.set("donation", donation.id);
    return url.toString();
  }

  // Back from such a redirect: Stripe adds `redirect_status`; wait for the donation's status.
  function resumeAfterRedirect() {
    const query = new URLSearchParams(location.search);
    const id = query.get("donation");
    if (!id || !/^[0-9a-f-]{36}$/i.test(id)) return false;
    // The address loses what Stripe added (the client secret among it), so a reload starts
    // afresh.
    history.replaceState(null, "", location.pathname);
    if (query.get("redirect_status") === "failed") {
      showErrors([], "Your payment did not go through, and nothing was taken. Please try again with another payment method.");
      return true;
    }
    form.hidden = true;
    donation = { id };
    waitForConfirmation();
    return true;
  }

  // The simulator's controls stand in for the card form: they change the simulated Stripe's
  // PaymentIntent and deliver its signed events to our webhook, as Stripe would.
  async function simulate(action) {
    const controls = [$("simulated-pay"), $("simulated-decline")];
    controls.forEach((control) => busy(control, true));
    let response;
    try {
      response = await fetch("/v1/simulator/payment_intents/" + encodeURIComponent(donation.payment_intent_id) + "/" + action, { method: "POST" });
    } catch (_) {
      response = null;
    }
    controls.forEach((control) => busy(control, false));
    if (!response || !response.ok) {
      const answer = response ? await response.json().catch(() => ({})) : {};
      return declined(answer.detail || "The payment could not be made. Please try again.");
    }
    if (action === "fail") return declined("Your card was declined.");
    waitForConfirmation();
  }

  if ($("simulated-pay")) {
    $("simulated-pay").addEventListener("click", () => simulate("succeed"));
    $("simulated-decline").addEventListener("click", () => simulate("fail"));
  }

  // How many declines this page has shown: a `failed` status left by one of them is stale.
  let declines = 0;

  function declined(message) {
    declines += 1;
    $("payment").hidden = true;
    showResult("Your payment did not go through", message + " Nothing was taken. You can try another card.", true);
  }

  $("try-another-card").addEventListener("click", () => {
    $("result").hidden = true;
    $("try-another-card").hidden = true;
    $("payment").hidden = false;
    $("payment-heading").focus();
  });

  // ---- Waiting for the webhook-confirmed status --------------------------------------------

  // The card step only says the payment was sent; the donation counts once Stripe's signed
  // event says so. Poll with back-off: 0.5 s, growing by half each time, at most 5 s apart,
  // for two minutes. A `failed` seen here is the earlier decline until the new event arrives.
  async function waitForConfirmation() {
    $("payment").hidden = true;
    say("Confirming your payment…");
    const started = Date.now();
    let delay = 500;
    while (Date.now() - started < 120000) {
      await sleep(delay);
      delay = Math.min(delay * 1.5, 5000);
      let current;
      try {
        const response = await fetch("/v1/donations/" + encodeURIComponent(donation.id), { cache: "no-store" });
        if (!response.ok) continue;
        current = await response.json();
      } catch (_) {
        continue;
      }
      if (current.status === "succeeded") {
        say("");
        return thanked(current);
      }
      // Failed with no decline shown here: it failed after the card step (a bank's later
      // answer, a redirect's outcome). After a shown decline, it is the earlier one until the
      // new event arrives.
      if (current.status === "failed" && declines === 0) {
        say("");
        return declined("Your payment was declined.");
      }
      if (current.status === "canceled") {
        say("");
        return showResult("This donation was cancelled", "Nothing was taken.", false);
      }
    }
    say("");
    showResult("We are still confirming your payment", "Your bank has not confirmed it yet. If it goes through, your receipt will arrive by email.", false);
  }

  function thanked(current) {
    let message = "Your donation of " + money(current.total_amount) + " to the " + document.querySelector("h1").textContent + " has been received.";
    if (current.total_amount > current.amount) {
      message += " That is your " + money(current.amount) + " gift and " + money(current.total_amount - current.amount) + " to cover the card fee.";
    }
    showResult("Thank you", message + " Your receipt is on its way to your email.", false);
    refreshProgress();
  }

  function showResult(heading, message, canRetry) {
    $("result-heading").textContent = heading;
    $("result-message").textContent = message;
    $("try-another-card").hidden = !canRetry;
    $("result").hidden = false;
    $("result-heading").focus();
  }

  // The campaign's total, read again until it shows the new gift (the API's figure may be a
  // second old).
  async function refreshProgress() {
    const before = Number($("raised").dataset.amount);
    for (let tries = 0; tries < 10; tries += 1) {
      try {
        const response = await fetch("/v1/campaigns/" + encodeURIComponent(slug), { cache: "no-store" });
        if (response.ok) {
          const campaign = await response.json();
          $("raised").dataset.amount = String(campaign.raised_amount);
          $("raised").textContent = money(campaign.raised_amount);
          $("donation-count").dataset.count = String(campaign.donation_count);
          $("donation-count").textContent = donationCount(campaign.donation_count);
          const bar = $("progress-bar");
          if (bar) bar.value = campaign.raised_amount;
          if (campaign.raised_amount !== before) return;
        }
      } catch (_) {
        // Only the progress is stale; the gift is confirmed.
      }
      await sleep(500);
    }
  }

  const donationCount = (count) => count + (count === 1 ? " donation" : " donations");

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // The server wrote the total plainly; written again as the rest of the page writes money.
  $("raised").textContent = money(Number($("raised").dataset.amount));
  showAmounts();
  resumeAfterRedirect();
})();
