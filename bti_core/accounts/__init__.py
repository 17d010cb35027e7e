"""Linked exchange accounts: read-only API keys kept encrypted (`vault`), the positions, balance
and forced orders an exchange reports for them (`exchanges`, one adapter per exchange), the
service that links, follows and removes them (`service`), and the demo exchange: its books
(`demo_books`) behind Binance USDⓈ-M's REST protocol on 127.0.0.1 (`demo_exchange`)."""
