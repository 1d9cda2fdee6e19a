"""Reports: records -> tables and figures. Nothing here recomputes a metric."""
