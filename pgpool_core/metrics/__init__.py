"""Pool metrics: OpenTelemetry (:mod:`.otel`) and Prometheus (:mod:`.prometheus`)."""
