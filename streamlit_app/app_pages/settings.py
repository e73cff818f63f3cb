"""Settings: edit the fleet's runtime settings; the router validates and every replica applies."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from shared.schemas import KeyList, SettingsListing, SettingView
from streamlit_app import data, widgets


def setting_rows(body: SettingsListing) -> list[SettingView]:
    """The runtime settings, by name."""
    return sorted(body.settings, key=lambda r: r.name)


def editor(row: SettingView) -> Any:
    """One widget fitting the setting's type; returns what the user chose."""
    name, value = row.name, row.value
    help_text = row.help
    default = row.default
    if default is not None:
        help_text += f" (default: {default})"
    key = f"setting:{name}"
    choices = row.choices
    if isinstance(value, bool):
        return st.checkbox(name, value=value, help=help_text, key=key)
    if choices and isinstance(choices, list):
        options = [str(c) for c in choices]
        index = options.index(str(value)) if str(value) in options else 0
        return st.selectbox(name, options, index=index, help=help_text, key=key)
    if isinstance(value, int):
        return st.number_input(name, value=value, step=1, help=help_text, key=key)
    if isinstance(value, float):
        return st.number_input(name, value=value, help=help_text, key=key, format="%g")
    if isinstance(value, dict):  # a map such as app_weights, edited as JSON
        text = st.text_input(name, value=json.dumps(value), help=help_text, key=key)
        try:
            return json.loads(text) if text.strip() else {}
        except ValueError:
            return text  # the router answers what is wrong with it
    if isinstance(value, list):
        text = st.text_input(name, value=", ".join(str(v) for v in value), help=help_text,
                             key=key)
        return [part.strip() for part in text.split(",") if part.strip()]
    return st.text_input(name, value="" if value is None else str(value), help=help_text,
                         key=key)


def changed(rows: list[SettingView], chosen: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in rows:
        name = row.name
        if name in chosen and chosen[name] != row.value:
            value = chosen[name]
            # number_input returns floats for float settings; keep ints as ints
            if isinstance(row.value, int) and isinstance(value, float) and value.is_integer():
                value = int(value)
            out[name] = value
    return out


st.title("Settings")
st.caption("Runtime settings live in Redis: a change here reaches every router replica "
           "within a second. Settings fixed at start (ports, Redis, tokens) are not listed.")
reply = data.router_settings()
if not widgets.problem(reply, "settings") and reply.data is not None:
    rows = setting_rows(reply.data)
    if not rows:
        st.info("The router lists no runtime settings.")
    with st.form("settings_form"):
        columns = st.columns(2)
        chosen = {}
        for index, row in enumerate(rows):
            with columns[index % 2]:
                chosen[row.name] = editor(row)
        raw = st.text_area(
            "Or a partial JSON object (applied after the fields above)",
            value="", placeholder='{"auto_pull": false}', key="settings_raw",
        )
        submitted = st.form_submit_button("Save", type="primary", key="settings_save")
    if submitted:
        changes = changed(rows, chosen)
        error = ""
        if raw.strip():
            try:
                extra = json.loads(raw)
            except ValueError as exc:
                extra, error = None, f"That is not JSON: {exc}"
            if extra is not None and not isinstance(extra, dict):
                error = "The JSON must be an object, such as {\"auto_pull\": false}."
            elif isinstance(extra, dict):
                changes.update(extra)
        if error:
            st.error(error)
        elif not changes:
            st.info("Nothing changed.")
        else:
            saved = data.save_settings(changes)
            if saved.ok:
                st.success("Saved: " + ", ".join(f"{k} = {v!r}" for k, v in changes.items()))
            else:
                st.error(f"The router refused the change: {saved.error}")


def key_rows(body: KeyList) -> list[dict[str, Any]]:
    """One row per client key for the table: limits spelled out, times readable."""
    rows: list[dict[str, Any]] = []
    for key in body.keys:
        rows.append({
            "app": key.app,
            "requests/min": key.requests_per_minute or "no limit",
            "tokens/min": key.tokens_per_minute or "no limit",
            "created": widgets.ago(key.created),
            "last used": widgets.ago(key.last_used) if key.last_used else "never",
        })
    return rows


def access_state(body: KeyList) -> tuple[str, str]:
    """How to show who may run inference: (level, sentence), level one of warning, info."""
    if body.client_auth == "keys":
        text = ("Inference is closed (client_auth = keys): a request needs a client key, "
                "the client token or the admin token.")
        if not body.keys:
            text += (" No key is left, and it stays closed until an admin opens it; "
                     "revoking the last key never reopens it.")
        return "info", text
    if not body.inference_open:
        return "info", ("client_auth is open, but FLEET_CLIENT_TOKEN is set: inference needs "
                        "it (or the admin token). Creating a key switches client_auth to keys.")
    return "warning", ("Inference is open (client_auth = open): anyone who can reach the "
                       "router may use it. Creating a key closes it, for good until an admin "
                       "opens it again.")


def _set_access(mode: str) -> None:
    # A button callback: it runs before the page is drawn again, so the state shown next
    # is the one just stored.
    saved = data.set_client_auth(mode)
    st.session_state["access_result"] = (
        ("success", "Inference is open to everyone." if mode == "open" else
         "Inference is closed: it needs a client key, the client token or the admin token.")
        if saved.ok else ("error", f"The router refused: {saved.error}"))


st.header("Client keys")
st.caption("One key per app: the key's app names its requests in usage and traces. Limits "
           "hold across every replica; 0 means no limit.")
keys_reply = data.client_keys()
if not widgets.problem(keys_reply, "client keys") and keys_reply.data is not None:
    level, state = access_state(keys_reply.data)
    (st.warning if level == "warning" else st.info)(state)
    if keys_reply.data.client_auth == "keys":
        if not keys_reply.data.keys:
            st.button("Open inference to everyone", key="access_open", on_click=_set_access,
                      args=("open",))
    else:
        st.button("Close inference (keys only)", key="access_close", on_click=_set_access,
                  args=("keys",))
    result = st.session_state.pop("access_result", None)
    if result:
        (st.success if result[0] == "success" else st.error)(result[1])
    keys = key_rows(keys_reply.data)
    if keys:
        st.dataframe(widgets.frame(keys), hide_index=True, width="stretch")
    else:
        st.info("No client keys yet.")
    with st.form("key_create", clear_on_submit=True):
        left, middle, right = st.columns(3)
        app = left.text_input("App", placeholder="chatbot", key="key_app")
        rpm = middle.number_input("Requests per minute", min_value=0, value=0, step=1,
                                      key="key_rpm")
        tpm = right.number_input("Tokens per minute", min_value=0, value=0, step=1,
                                      key="key_tpm")
        create = st.form_submit_button("Create key", key="key_create_button")
    if create:
        made = data.create_key(app.strip(), int(rpm), int(tpm))
        if made.data is not None:
            st.success(f"Key for {made.data.app}: copy it now, it is not shown again.")
            st.code(made.data.key, language=None)
        else:
            st.error(f"The router refused: {made.error}")
    if keys:
        with st.form("key_revoke"):
            gone = st.selectbox("Revoke the key of", [str(r["app"]) for r in keys],
                                key="key_revoke_app")
            revoke = st.form_submit_button("Revoke", key="key_revoke_button")
        if revoke:
            done = data.revoke_key(str(gone))
            if done.ok:
                st.success(f"Revoked {gone}: every replica refuses its key within a second. "
                           "Inference stays closed (client_auth = keys).")
            else:
                st.error(f"The router refused: {done.error}")
