// The staff console's one script: the passkey ceremonies of the sign-in and enrolment pages
// (WebAuthn through navigator.credentials), talking JSON to the server. Every other page works
// without it.
(function () {
  'use strict';

  function toBytes(text) {
    var base64 = text.replace(/-/g, '+').replace(/_/g, '/');
    while (base64.length % 4) { base64 += '='; }
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) { bytes[i] = binary.charCodeAt(i); }
    return bytes.buffer;
  }

  function toText(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = '';
    for (var i = 0; i < bytes.length; i++) { binary += String.fromCharCode(bytes[i]); }
    return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function say(text) {
    var status = document.getElementById('status');
    if (status) { status.textContent = text; }
  }

  async function post(url, body) {
    var response = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Accept': 'application/json' },
      credentials: 'same-origin',
      body: JSON.stringify(body || {})
    });
    var answer = await response.json().catch(function () { return {}; });
    if (!response.ok) {
      throw new Error(answer.detail || ('The console answered ' + response.status + '.'));
    }
    return answer;
  }

  function unsupported() {
    if (!window.PublicKeyCredential || !navigator.credentials) {
      say('This browser cannot use passkeys. Use a current Chrome, Edge, Firefox or Safari.');
      return true;
    }
    return false;
  }

  function failed(error) {
    if (error && error.name === 'NotAllowedError') {
      say('The passkey was not used (cancelled, or it timed out). Try again.');
    } else {
      say(error && error.message ? error.message : 'That did not work. Try again.');
    }
  }

  var enrol = document.getElementById('enrol');
  if (enrol) {
    enrol.addEventListener('submit', async function (event) {
      event.preventDefault();
      if (unsupported()) { return; }
      var secret = enrol.getAttribute('data-secret');
      var button = document.getElementById('enrol-button');
      button.disabled = true;
      say('Follow your browser’s steps to make the passkey…');
      try {
        var begun = await post('/staff/enrol/' + secret + '/begin');
        var options = begun.publicKey;
        options.challenge = toBytes(options.challenge);
        options.user.id = toBytes(options.user.id);
        (options.excludeCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
        var made = await navigator.credentials.create({ publicKey: options });
        var credential = {
          id: made.id,
          rawId: toText(made.rawId),
          type: made.type,
          response: {
            attestationObject: toText(made.response.attestationObject),
            clientDataJSON: toText(made.response.clientDataJSON),
            transports: made.response.getTransports ? made.response.getTransports() : undefined
          },
          extensions: made.getClientExtensionResults()
        };
        var done = await post('/staff/enrol/' + secret + '/finish',
          { ceremony: begun.ceremony, credential: credential });
        say('Registered. Opening the console…');
        window.location.assign(done.next);
      } catch (error) {
        failed(error);
        button.disabled = false;
      }
    });
  }

  var signIn = document.getElementById('sign-in');
  if (signIn) {
    signIn.addEventListener('submit', async function (event) {
      event.preventDefault();
      if (unsupported()) { return; }
      var button = document.getElementById('sign-in-button');
      button.disabled = true;
      say('Follow your browser’s steps to use your passkey…');
      try {
        var begun = await post('/staff/login/begin',
          { name: document.getElementById('name').value });
        var options = begun.publicKey;
        options.challenge = toBytes(options.challenge);
        (options.allowCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
        var used = await navigator.credentials.get({ publicKey: options });
        var credential = {
          id: used.id,
          rawId: toText(used.rawId),
          type: used.type,
          response: {
            authenticatorData: toText(used.response.authenticatorData),
            clientDataJSON: toText(used.response.clientDataJSON),
            signature: toText(used.response.signature),
            userHandle: used.response.userHandle ? toText(used.response.userHandle) : null
          },
          extensions: used.getClientExtensionResults()
        };
        var done = await post('/staff/login/finish', {
          ceremony: begun.ceremony,
          credential: credential,
          next: signIn.getAttribute('data-next')
        });
        say('Signed in.');
        window.location.assign(done.next);
      } catch (error) {
        failed(error);
        button.disabled = false;
      }
    });
  }
})();
