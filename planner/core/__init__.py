"""The ground floor: errors, units, file reading, the problem and schedule types, the plan
document and shared limits. Imports nothing of the project outside this package."""
