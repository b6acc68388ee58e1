"""The model processes: uWSGI mules that load the model after fork and score jobs."""
