"""Settings: edit the fleet's runtime settings; the router validates and every replica applies."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from streamlit_app import data, widgets
from streamlit_app.data import pick


def setting_rows(body: Any) -> list[dict[str, Any]]:
    """[{name, value, default, help, choices}] from a mapping or a list, bare or wrapped."""
    found = pick(body, "settings", "runtime", default=body)
    rows = []
    for row in widgets.records(found, key_name="name"):
        if "value" not in row:
            continue
        rows.append(row)
    return sorted(rows, key=lambda r: str(r.get("name")))


def editor(row: dict[str, Any]) -> Any:
    """One widget fitting the setting's type; returns what the user chose."""
    name, value = str(row["name"]), row["value"]
    help_text = str(row.get("help") or "")
    default = row.get("default")
    if default is not None:
        help_text += f" (default: {default})"
    key = f"setting:{name}"
    choices = row.get("choices") or []
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
    if isinstance(value, list):
        text = st.text_input(name, value=", ".join(str(v) for v in value), help=help_text,
                             key=key)
        return [part.strip() for part in text.split(",") if part.strip()]
    return st.text_input(name, value="" if value is None else str(value), help=help_text,
                         key=key)


def changed(rows: list[dict[str, Any]], chosen: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in rows:
        name = str(row["name"])
        if name in chosen and chosen[name] != row["value"]:
            value = chosen[name]
            # number_input returns floats for float settings; keep ints as ints
            if isinstance(row["value"], int) and isinstance(value, float) and value.is_integer():
                value = int(value)
            out[name] = value
    return out


st.title("Settings")
st.caption("Runtime settings live in Redis: a change here reaches every router replica "
           "within a second. Settings fixed at start (ports, Redis, tokens) are not listed.")
reply = data.router_settings()
if not widgets.problem(reply, "settings"):
    rows = setting_rows(reply.data)
    if not rows:
        st.info("The router lists no runtime settings.")
    with st.form("settings_form"):
        columns = st.columns(2)
        chosen = {}
        for index, row in enumerate(rows):
            with columns[index % 2]:
                chosen[str(row["name"])] = editor(row)
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


def key_rows(body: Any) -> list[dict[str, Any]]:
    """One row per client key for the table: limits spelled out, times readable."""
    rows = []
    for key in widgets.records(pick(body, "keys", default=[]), key_name="app"):
        rows.append({
            "app": key.get("app"),
            "requests/min": key.get("requests_per_minute") or "no limit",
            "tokens/min": key.get("tokens_per_minute") or "no limit",
            "created": widgets.ago(key.get("created")),
            "last used": widgets.ago(key.get("last_used")) if key.get("last_used") else "never",
        })
    return rows


st.header("Client keys")
st.caption("One key per app. Once any key exists, inference needs a key (or the client or "
           "admin token), and the key's app names its requests in usage and traces. Limits "
           "hold across every replica; 0 means no limit.")
keys_reply = data.client_keys()
if not widgets.problem(keys_reply, "client keys"):
    rows = key_rows(keys_reply.data)
    if rows:
        st.dataframe(widgets.frame(rows), hide_index=True, width="stretch")
    else:
        st.info("No client keys yet: inference is open unless FLEET_CLIENT_TOKEN is set.")
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
        if made.ok and isinstance(made.data, dict):
            st.success(f"Key for {made.data.get('app')}: copy it now, it is not shown again.")
            st.code(str(made.data.get("key", "")), language=None)
        else:
            st.error(f"The router refused: {made.error}")
    if rows:
        with st.form("key_revoke"):
            gone = st.selectbox("Revoke the key of", [str(r["app"]) for r in rows],
                                key="key_revoke_app")
            revoke = st.form_submit_button("Revoke", key="key_revoke_button")
        if revoke:
            done = data.revoke_key(gone)
            if done.ok:
                st.success(f"Revoked {gone}: every replica refuses its key within a second.")
            else:
                st.error(f"The router refused: {done.error}")
