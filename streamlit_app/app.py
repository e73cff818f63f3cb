"""The dashboard's entry file: eight pages wired with st.navigation, and the router status."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from streamlit_app import data, live
from streamlit_app.nav import PAGES

__all__: list[str] = []

HERE = Path(__file__).parent


@st.fragment(run_every="1s")
def router_status() -> None:
    cfg = data.config()
    reply, _ = live.live_fleet()
    if reply.unreachable:
        st.error(f"Router unreachable: {cfg.router_url} — retrying")
    elif reply.fleet_state:
        st.error(f"Router {cfg.router_url} · fleet state {reply.fleet_state} — retrying")
    else:
        online = reply.data.fleet.nodes_online if reply.data else None
        total = reply.data.fleet.nodes_total if reply.data else None
        st.success(f"Router {cfg.router_url} · {data.fmt(online)}/{data.fmt(total)} "
                   "nodes online")


def main() -> None:
    st.set_page_config(page_title="Herd", page_icon="🐑", layout="wide")
    pages = [
        st.Page(HERE / "app_pages" / file, title=title, icon=icon, default=index == 0,
                url_path=None if index == 0 else file.removesuffix(".py"))
        for index, (file, title, icon) in enumerate(PAGES)
    ]
    page = st.navigation(pages)
    with st.sidebar:
        router_status()
        if st.button("Refresh now", key="refresh_now"):
            data.refresh()
    page.run()


main()
