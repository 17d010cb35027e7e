"""Claims: from a liquidation to an exactly-once payout."""
