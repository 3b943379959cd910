"""What people read: search, customer history, analysis, the report and its charts, exports."""
