// The /device page: confirm a device code, then approve or deny it with a Dify console session, a GitHub sign-in or an SSO
// approval grant.
// Plain JavaScript, no build step; the page's CSP allows only this file.
(function () {
  "use strict";

  var API = "/openapi/v1/oauth/device";
  var STASH = "authgate.device.user_code";
  var CODE_ALPHABET = /^[BCDFGHJKLMNPQRSTVWXZ]{8}$/;
  var GITHUB_EXPIRED = "Your GitHub sign-in has expired. Enter the code again to retry.";

  var root = document.getElementById("device");
  var cfg = {
    signedIn: root.dataset.signedIn === "true",
    enterprise: root.dataset.enterprise === "true",
    signinURL: root.dataset.signinUrl,
    csrfCookie: root.dataset.csrfCookie,
    ssoVerified: root.dataset.ssoVerified === "true",
    ssoState: root.dataset.ssoState || "",
    ssoError: root.dataset.ssoError === "true",
    github: root.dataset.github === "true",
    githubVerified: root.dataset.githubVerified === "true",
    githubError: root.dataset.githubError === "true"
  };
  var userCode = "";
  var ssoCSRF = "";
  var githubCSRF = "";

  function $(id) { return document.getElementById(id); }

  function show(view) {
    var views = document.querySelectorAll(".view");
    for (var i = 0; i < views.length; i++) views[i].hidden = views[i].id !== "view-" + view;
    flash("");
    var first = document.querySelector("#view-" + view + " input, #view-" + view + " button");
    if (first) first.focus();
  }

  function flash(msg) {
    var el = $("flash");
    el.textContent = msg;
    el.hidden = !msg;
  }

  function setText(id, text) { $(id).textContent = text; }

  function showCode(code) {
    var els = document.querySelectorAll(".js-user-code");
    for (var i = 0; i < els.length; i++) els[i].textContent = code;
  }

  // normalize accepts what a person types (any case, dashes, spaces) and returns "XXXX-XXXX", or "" when it cannot be a code.
  function normalize(raw) {
    var s = String(raw || "").toUpperCase().replace(/[\s-]/g, "");
    return CODE_ALPHABET.test(s) ? s.slice(0, 4) + "-" + s.slice(4) : "";
  }

  function readCookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) return decodeURIComponent(parts[i].slice(eq + 1));
    }
    return "";
  }

  // call sends a same-origin request and resolves to {status, body}; a network failure resolves to status 0.
  function call(method, url, payload, csrf) {
    var opts = { method: method, credentials: "same-origin", headers: { "Accept": "application/json" } };
    if (payload) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(payload);
    }
    if (csrf) opts.headers["X-CSRF-Token"] = csrf;
    return fetch(url, opts).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (body) {
        return { status: resp.status, body: body || {} };
      });
    }, function () { return { status: 0, body: {} }; });
  }

  function busy(ids, on) {
    for (var i = 0; i < ids.length; i++) $(ids[i]).disabled = on;
  }

  function goSignIn() {
    try { sessionStorage.setItem(STASH, userCode); } catch (e) { /* storage may be disabled */ }
    window.location.assign(cfg.signinURL);
  }

  // How each authorize view approves or denies: the endpoint after API + "/" + action, and the CSRF token of its session
  // (the console's cookie, or the token the GitHub or SSO context answered).
  var approvals = {
    account: { suffix: "", csrf: function () { return readCookie(cfg.csrfCookie); } },
    github: { suffix: "", csrf: function () { return githubCSRF; } },
    sso: { suffix: "-external", csrf: function () { return ssoCSRF; } }
  };
  var SIGN_IN_AGAIN = { github: "Sign in with GitHub again.", sso: "Sign in with SSO again." };

  // Errors an approval from view can end in, by the server's error code.
  function approvalFailed(res, view) {
    var code = res.body.error;
    if (res.status === 429) return show("rate-limited");
    if (code === "expired_or_unknown") return show("expired");
    if (code === "already_resolved" || code === "user_code_not_pending") {
      return flash("This code was already approved or denied. Start the sign-in again on your device.");
    }
    if (view === "github" && res.status === 401) return githubFailed(GITHUB_EXPIRED);
    if (code === "login_required") return goSignIn();
    if (code === "csrf_invalid") return flash("Your session could not be verified. Reload the page and try again.");
    if (code === "account_inactive") return flash("Your Dify account is not active.");
    if (code === "invalid_session" || code === "session_already_consumed") {
      return flash("Your SSO session has expired or was already used. Sign in with SSO again.");
    }
    if (code === "email_belongs_to_dify_account") {
      return flash("This email belongs to a Dify account. Sign in with your Dify account instead.");
    }
    if (code === "user_code_mismatch") {
      return flash("The code does not match the one you signed in for. " + (SIGN_IN_AGAIN[view] || "Sign in again."));
    }
    flash("Something went wrong. Please try again.");
  }

  function lookup(code) {
    busy(["continue"], true);
    call("GET", API + "/lookup?user_code=" + encodeURIComponent(code)).then(function (res) {
      busy(["continue"], false);
      if (res.status === 429) return show("rate-limited");
      if (res.status !== 200) return show("lookup-failed");
      if (!res.body.valid) return show("expired");
      userCode = code;
      showCode(code);
      if (cfg.signedIn) return authorizeAccount(res.body);
      setText("chooser-client-id", res.body.client_id || "");
      setText("chooser-device-label", res.body.device_label || "");
      show("chooser");
    });
  }

  function formatStarted(createdAt) {
    var d = new Date(createdAt);
    if (isNaN(d.getTime())) return "unknown";
    var mins = Math.max(0, Math.round((Date.now() - d.getTime()) / 60000));
    var ago = mins === 0 ? "just now" : mins === 1 ? "1 minute ago" : mins + " minutes ago";
    return d.toLocaleString() + " (" + ago + ")";
  }

  // showContext fills an authorize view's device context (RFC 8628 §5.4) from an answer that carries it, and shows the view.
  function showContext(view, body) {
    setText(view + "-client-id", body.client_id || "");
    setText(view + "-device-label", body.device_label || "");
    setText(view + "-started", formatStarted(body.created_at));
    setText(view + "-ip", body.creator_ip || "unknown");
    show("authorize-" + view);
  }

  function authorizeAccount(lookupBody) {
    setText("account-client-id", lookupBody.client_id || "");
    setText("account-device-label", lookupBody.device_label || "");
    setText("account-started", "…");
    setText("account-ip", "…");
    call("GET", "/device/details?user_code=" + encodeURIComponent(userCode)).then(function (res) {
      if (res.status === 401) return show("chooser");
      if (res.status === 429) return show("rate-limited");
      if (res.status === 404) return show("expired");
      if (res.status !== 200) return show("lookup-failed");
      showContext("account", res.body);
    });
  }

  // resolve approves or denies (action) from an authorize view, with that view's session.
  function resolve(view, action) {
    var ids = [view + "-approve", view + "-deny"];
    var how = approvals[view];
    busy(ids, true);
    call("POST", API + "/" + action + how.suffix, { user_code: userCode }, how.csrf()).then(function (res) {
      busy(ids, false);
      if (res.status === 200) return show(action === "approve" ? "success" : "denied");
      approvalFailed(res, view);
    });
  }

  // startSignIn is reached only from the chooser, after the person confirmed the code: the server starts SSO or a GitHub
  // sign-in (path) for a POST that carries the page's state, never for a link, and answers with the URL to go to (the
  // identity provider's, or GitHub's), which returns the browser here.
  function startSignIn(button, path) {
    busy([button], true);
    call("POST", API + path, { user_code: userCode, state: cfg.ssoState }).then(function (res) {
      busy([button], false);
      if (res.status === 200 && /^https?:\/\//.test(res.body.url || "")) return window.location.assign(res.body.url);
      if (res.status === 429) return show("rate-limited");
      if (res.body.error === "expired_or_unknown") return show("expired");
      if (res.body.error === "user_code_not_pending") {
        return flash("This code was already approved or denied. Start the sign-in again on your device.");
      }
      if (res.body.error === "csrf_invalid") return flash("This page has expired. Reload it and enter the code again.");
      if (res.body.error === "sso_initiate_failed") return flash("The SSO provider could not be reached. Try again later.");
      show("lookup-failed");
    });
  }

  function githubFailed(message) {
    setText("github-error-message", message);
    show("github-error");
  }

  function authorizeGitHub() {
    call("GET", API + "/github/context").then(function (res) {
      if (res.status === 409) return show("expired");
      if (res.status === 403) return githubFailed("The Dify account for this GitHub account is not active.");
      if (res.status !== 200) return githubFailed(GITHUB_EXPIRED);
      userCode = res.body.user_code;
      githubCSRF = res.body.csrf_token;
      showCode(userCode);
      setText("github-account", res.body.account_email);
      setText("github-login", res.body.github_login ? "@" + res.body.github_login : "");
      showContext("github", res.body);
    });
  }

  function authorizeSSO() {
    call("GET", API + "/approval-context").then(function (res) {
      if (res.status === 409) return show("expired");
      if (res.status !== 200) {
        setText("sso-error-message", "Your SSO session has expired. Start again from the code on your device.");
        return show("sso-error");
      }
      userCode = res.body.user_code;
      ssoCSRF = res.body.csrf_token;
      showCode(userCode);
      setText("sso-email", res.body.subject_email);
      setText("sso-issuer", res.body.subject_issuer);
      showContext("sso", res.body);
    });
  }

  function restart() {
    userCode = "";
    $("user-code").value = "";
    show("code-entry");
  }

  // Wire up the controls.
  $("code-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var code = normalize($("user-code").value);
    $("code-hint").hidden = !!code;
    if (code) lookup(code);
  });
  $("choose-account").addEventListener("click", function () {
    if (!cfg.signedIn) return goSignIn();
    call("GET", API + "/lookup?user_code=" + encodeURIComponent(userCode)).then(function (res) {
      if (res.status === 200 && res.body.valid) return authorizeAccount(res.body);
      show(res.status === 429 ? "rate-limited" : "expired");
    });
  });
  if ($("choose-sso")) $("choose-sso").addEventListener("click", function () { startSignIn("choose-sso", "/sso-initiate"); });
  if ($("choose-github")) {
    $("choose-github").addEventListener("click", function () { startSignIn("choose-github", "/github/start"); });
  }
  Object.keys(approvals).forEach(function (view) {
    ["approve", "deny"].forEach(function (action) {
      $(view + "-" + action).addEventListener("click", function () { resolve(view, action); });
    });
  });
  var restarts = document.querySelectorAll(".js-restart");
  for (var i = 0; i < restarts.length; i++) restarts[i].addEventListener("click", restart);

  // A code in the URL (verification_uri_complete) or stashed before sign-in only prefills the form: the person still
  // confirms it. The query is removed at once so the code does not linger in history or leak onward (RFC 8628 §5.4).
  var prefill = new URLSearchParams(window.location.search).get("user_code") || "";
  try {
    prefill = prefill || sessionStorage.getItem(STASH) || "";
    sessionStorage.removeItem(STASH);
  } catch (e) { /* storage may be disabled */ }
  if (window.location.search) history.replaceState(null, "", window.location.pathname);

  if (cfg.ssoError) return show("sso-error");
  if (cfg.githubError) return show("github-error");
  if (cfg.ssoVerified) return authorizeSSO();
  if (cfg.githubVerified) return authorizeGitHub();
  $("user-code").value = normalize(prefill) || "";
  show("code-entry");
})();
