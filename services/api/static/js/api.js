/* The api: JSON over fetch with the bearer token when one is needed, and EventSource URLs. */

import { $ } from "./util.js";

export function token() { return sessionStorage.getItem("handshake-token") || ""; }

let asking = null;

function askToken() {
  if (asking) return asking;
  asking = new Promise((resolve) => {
    const dialog = $("token-dialog");
    const input = $("token-input");
    $("token-form").onsubmit = () => {
      sessionStorage.setItem("handshake-token", input.value.trim());
      asking = null;
      resolve();
    };
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
  return asking;
}

export class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

const needsToken = () => document.querySelector('meta[name="handshake-auth"]')?.content === "bearer";

export async function request(path, accept = "application/json") {
  if (needsToken() && !token()) await askToken();
  for (;;) {
    const headers = { Accept: accept };
    if (token()) headers.Authorization = "Bearer " + token();
    const response = await fetch(path, { headers });
    if (response.status === 401) { await askToken(); continue; }
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new ApiError(response.status, body.detail || response.statusText);
    }
    return response;
  }
}

export async function api(path) {
  return (await request(path)).json();
}

export function query(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "" && v !== false) p.set(k, String(v));
  return p.toString();
}

export function streamUrl(path, params) {
  return `${path}?${query({ ...params, access_token: token() })}`;
}
