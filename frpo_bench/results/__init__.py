"""Results: typed leaderboard rows, their CSV form, summaries, reports and the regression gate.

Reads stored results only; imports no component and nothing of the engine."""
