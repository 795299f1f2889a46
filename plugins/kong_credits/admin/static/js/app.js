// Sign-in and routing: #/ is the operator view, #/wallet/NAME a wallet's view.

import { ApiError, get, session, walletPath } from "./api.js";
import { operatorView } from "./operator.js";
import { walletView } from "./wallet.js";

const $ = (id) => document.getElementById(id);
const ROLE_KEY = "kong-credits.role";

function showMessage(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

function showSignIn(error = "") {
  $("sign-in").hidden = false;
  $("nav").hidden = true;
  $("view").replaceChildren();
  $("sign-in-error").textContent = error;
  $("sign-in-wallet").value = $("sign-in-wallet").value || walletInHash() || "";
  $("token").focus();
}

/** `#/wallet/NAME?range=30d`: the wallet (its name percent-encoded) and the view's options. */
function walletInHash() {
  const match = location.hash.match(/^#\/wallet\/([^?]+)/);
  return match ? decodeURIComponent(match[1]) : null;
}

function hashOptions() {
  const query = location.hash.split("?")[1];
  return Object.fromEntries(new URLSearchParams(query || ""));
}

/** Which token this is: an admin token lists wallets; a wallet token opens its wallet. */
async function signIn(token, wallet) {
  session.signIn(token, wallet);
  try {
    if (wallet) {
      await get(walletPath(wallet));
      sessionStorage.setItem(ROLE_KEY, "wallet");
    } else {
      await get("/v1/wallets", { limit: 1 });
      sessionStorage.setItem(ROLE_KEY, "admin");
    }
  } catch (error) {
    session.signOut();
    if (error instanceof ApiError && error.status === 401) return "That token is not valid.";
    if (error instanceof ApiError && error.status === 403) {
      return wallet ? `This token cannot open wallet “${wallet}”.`
        : "This is a wallet token: enter the wallet it belongs to.";
    }
    return error.message;
  }
  const target = wallet ? `#/wallet/${encodeURIComponent(wallet)}` : "#/";
  if (location.hash === target) route();
  else location.hash = target;  // hashchange routes
  return "";
}

async function route() {
  if (!session.token) {
    showSignIn();
    return;
  }
  const admin = sessionStorage.getItem(ROLE_KEY) === "admin";
  $("sign-in").hidden = true;
  $("nav").hidden = false;
  $("nav-wallets").hidden = !admin;
  $("whoami").textContent = admin ? "admin" : `wallet ${session.wallet}`;
  showMessage("");
  const view = document.createElement("div");
  view.id = "view";
  $("view").replaceWith(view);
  const wallet = walletInHash();
  view.dataset.view = wallet ? "wallet" : "operator";
  try {
    if (wallet) await walletView(view, wallet, hashOptions());
    else if (admin) await operatorView(view);
    else location.hash = `#/wallet/${encodeURIComponent(session.wallet)}`;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      session.signOut();
      showSignIn("The token was refused (revoked?): sign in again.");
    } else if (error instanceof ApiError && error.status === 403) {
      view.replaceChildren();
      showMessage(`This token cannot open ${wallet ? `wallet “${wallet}”` : "the wallet list"}.`);
    } else {
      showMessage(`Could not load this view: ${error.message}`);
    }
  }
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("sign-in-error").textContent = await signIn($("token").value.trim(), $("sign-in-wallet").value.trim());
});
$("sign-out").addEventListener("click", () => {
  session.signOut();
  location.hash = "#/";
  showSignIn();
});
window.addEventListener("hashchange", route);
route();
