//! The gamification service extracted from the monolith, with its own database (not built yet).
