"""The dashboard's pages; each is a script run by st.navigation, holding only UI."""
