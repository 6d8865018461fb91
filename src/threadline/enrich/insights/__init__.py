"""Knowledge insights (issue 19 item 4): the GraphQL types `Insights` exposes (rules and SQL: search/insight_*)."""
