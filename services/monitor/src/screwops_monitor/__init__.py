"""Monitor: watches the production model's score drift, defect rate and accuracy on reviewed
inspections against its evaluation baseline, and asks for retraining when they cross thresholds."""
