"""Risk: liquidation price, liquidation probability, volatility models."""
