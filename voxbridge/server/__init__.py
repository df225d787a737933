"""The status server: JSON API, live events over a WebSocket, Prometheus metrics, dashboard."""
