"""Helpers for page tests (the data folders they use, `filled` and `recent`, are in
tests/conftest.py)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def sign_in(at: AppTest, username: str = "trader", password: str = "trader-demo") -> AppTest:
    """Fill the sign-in form as a person would (the demo accounts exist on first use)."""
    at.run()
    assert not at.exception, at.exception
    at.text_input[0].input(username)
    at.text_input[1].input(password)
    at.button[0].click().run()
    assert not at.exception, at.exception
    return at
