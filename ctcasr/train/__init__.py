"""Training: the loop (trainer), learning-rate schedules, CTC loss helpers."""
