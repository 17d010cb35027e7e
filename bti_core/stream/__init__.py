"""Real-time analysis: the scoring module shared by every streaming engine."""
