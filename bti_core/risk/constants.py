"""Constants the risk modules share, each with the measurement that chose it (one place, so
the engine, the backtest and the learned models cannot drift apart)."""

from __future__ import annotations

import pandas as pd

# Half a year of hourly bars for the fit. On Binance BTC/ETH 2020–21 (`bti backtest`, stride
# 12 h) shorter windows follow volatility regimes sooner: brier 0.1421 (2 years), 0.1418 (1 year),
# 0.1410 (270 days), 0.1403 (180 days), 0.1400 (120 days); per symbol and year the cells' mean
# |ln(realised/predicted)| in 2021 fell from 0.19 (1 year) to 0.12 (180 days), and the 1-year
# fit lost to the 30-day GBM baseline on BTC 2021 (brier 0.1434 against 0.1390) where 180 days
# draws level (0.1397, log loss 0.4292 against 0.4338). Below ~4 months the weekly tails of
# low-leverage cover grow too fat (long 5×/168 h 0.71 at 120 days).
FIT_WINDOW = pd.Timedelta(days=180)
