"""Reports rendered from result objects: text, JUnit, JSONL, HTML with timelines, rule coverage, baselines, corpus runs."""
