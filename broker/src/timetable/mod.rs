//! A school's timetable from its spreadsheet, pure: CSV rows (one class's
//! weekly lesson each) read into series bookings, every bad cell named by
//! line and column with the rule it breaks (`sheet`), and the downloadable
//! template. `service::timetable` books the rows as one set.

pub mod sheet;
