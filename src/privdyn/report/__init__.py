"""The run report and the comparison report: static figures, interactive panels and self-contained HTML."""
