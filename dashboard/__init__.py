"""The BTI Streamlit dashboard."""
