"""The Streamlit dashboard: design topologies, launch runs and watch them from run stores; it never sees data."""
