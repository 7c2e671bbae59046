// The API: every call carries the tab's key (sessionStorage only); refusals become ApiError with the server's message.

import { $, el } from "./dom.js";

export const KEY_STORE = "moesaic.console.key";

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

export async function api(path, init) {
  const headers = { Accept: "application/json" };
  if (init && init.body) headers["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) headers.Authorization = "Bearer " + key;
  let response;
  try {
    response = await fetch(path, { ...(init || {}), headers });
  } catch (error) {
    throw new ApiError(0, "the server cannot be reached (" + error.message + ")", "unreachable");
  }
  if (!response.ok) {
    let message = response.statusText;
    let code = null;
    try {
      const body = await response.json();
      if (body && body.error) {
        message = body.error.message || message;
        code = body.error.code || null;
      }
    } catch (_) {
      // not JSON: keep the status text
    }
    throw new ApiError(response.status, message, code);
  }
  return response;
}

export function showError(error) {
  const banner = $("banner");
  banner.replaceChildren();
  let hint = "";
  if (error.status === 401) hint = " Enter a valid API key above and press Use.";
  else if (error.status === 403) hint = " This key may not use that model or endpoint.";
  else if (error.status === 429) hint = " Wait a moment, or raise the key's limits.";
  const status = error.status ? error.status + ": " : "";
  banner.append(el("strong", {}, status), error.message + hint);
  banner.className = "error";
  banner.hidden = false;
}

export function clearError() {
  $("banner").hidden = true;
}
