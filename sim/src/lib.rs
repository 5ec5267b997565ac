//! The discrete-event simulator (LiveSky §4): replays events at internet scale by driving the same
//! sans-IO admission, tracker, tree and peer cores the network runs, on virtual time with a seeded
//! network model. Not built yet: see the simulator issue.
