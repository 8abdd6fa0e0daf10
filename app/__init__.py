"""The Streamlit app's pages and shared widgets; `front_end.py` is the entry."""
