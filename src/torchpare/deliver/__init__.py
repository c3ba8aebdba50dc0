"""Deliveries: replay a function's or method's teacher-side outputs on the student side."""
