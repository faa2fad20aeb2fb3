pub mod model;
pub mod options;
