"""The edges: HTTP (v1, V2), WebSocket. Decode the wire into typed requests, render results."""
