//! Seats that students open (issue 22): seat links and, later, a teacher's
//! controls over a class's seats. Free functions and plain types, so that
//! the lesson clock, dispatch and the edge sync can call them without
//! growing `Broker`.

pub mod links;
