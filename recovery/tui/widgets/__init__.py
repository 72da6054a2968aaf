"""Widgets of the TUI; each draws only characters the Linux console font has."""
