"""BTI engine: market data, risk, pricing, claims and the chain, with no UI in it."""

__version__ = "0.1.0"
