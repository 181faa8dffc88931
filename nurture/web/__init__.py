"""The marketer-facing web shell: layout, dashboard, error pages."""
