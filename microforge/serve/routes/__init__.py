"""HTTP routes of the ingress, one module per area of the API."""
