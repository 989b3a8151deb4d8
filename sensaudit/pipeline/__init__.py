"""The audit's passes over the data: probing the models, reading, ranking, replaying, judging,
comparing."""
