pub mod ramp;
pub mod stall;
pub mod sync;
