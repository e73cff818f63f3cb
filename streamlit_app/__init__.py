"""The Streamlit dashboard: pages over one data module that reads the router's API."""
