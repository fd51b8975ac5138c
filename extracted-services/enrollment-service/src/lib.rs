//! The enrollment business service orchestrating students, finance and gamification (not built yet).
