//! FLV → MPEG-TS remuxer for RTMP ingest (sans-IO).
//!
//! RTMP publishers (OBS, ffmpeg) send H.264 and AAC as FLV tag bodies, while Tier 0 takes MPEG-TS
//! ([`crate::ingest::source::Publisher::feed`]). [`FlvToTs`] turns each tag body into whole 188-byte packets
//! that look like a broadcast encoder's TS (AUD and in-band SPS/PPS per access unit, PAT/PMT before
//! every keyframe, ADTS audio, PCR), so resync, chunker and everything after it stay unchanged.
//! Input: tag bodies and their FLV timestamps; output: bytes appended to a buffer; counters in [`stats`].
//!
//! [`stats`]: FlvToTs::stats

mod mux;
#[cfg(test)]
mod tests;

pub use mux::{AUDIO_PID, PMT_PID, VIDEO_PID};
use mux::{Streams, TsMux};

const CODEC_AVC: u8 = 7;
const FORMAT_AAC: u8 = 10;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
/// access_unit_delimiter with primary_pic_type 7 ("any slice type") and its stop bit.
const AUD: [u8; 6] = [0, 0, 0, 1, NAL_AUD, 0xf0];
const START_CODE: [u8; 4] = [0, 0, 0, 1];
const ADTS_HEADER_LEN: usize = 7;
/// frame_length is 13 bits and counts the header.
const MAX_ADTS_PAYLOAD: usize = 0x1fff - ADTS_HEADER_LEN;
/// Sampling frequencies by ADTS sampling_frequency_index.
const AAC_RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

/// Output waits at the start until both sequence headers are known or this much media has passed,
/// so the first PMT already lists both streams: a PMT that changes right after the first keyframe
/// makes the chunker flag a DISCONTINUITY (and HLS cut a segment) mid-GOP. ffmpeg sends the AAC
/// header only after the first video frame when its input is TS.
const STARTUP_HOLD_MS: u32 = 1000;
/// Bounds on what the startup hold keeps, whatever the timestamps say.
const STARTUP_HOLD_MAX_FRAMES: usize = 512;
const STARTUP_HOLD_MAX_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlvError {
    #[error("video codec id 7 expected (H.264/AVC); got {0} ({name}): set the encoder to x264/H.264", name = video_codec_name(*.0))]
    UnsupportedVideoCodec(u8),
    #[error(
        "enhanced RTMP video (FourCC {}) is not supported: set the encoder to H.264 (x264) over plain RTMP",
        String::from_utf8_lossy(.0)
    )]
    UnsupportedVideoFourCc([u8; 4]),
    #[error("audio format 10 expected (AAC); got {0} ({name}): set the encoder's audio codec to AAC", name = audio_format_name(*.0))]
    UnsupportedAudioCodec(u8),
    #[error("AAC object type {0} ({name}) cannot be carried as ADTS: set the audio encoder to AAC-LC", name = aac_object_name(*.0))]
    UnsupportedAacObjectType(u8),
    #[error("truncated {what}: the tag body ends early (the publisher sent a corrupt or cut-off message)")]
    Truncated { what: &'static str },
    #[error("bad AVC sequence header (AVCDecoderConfigurationRecord): {reason}")]
    BadAvcConfig { reason: &'static str },
    #[error("bad AAC sequence header (AudioSpecificConfig): {reason}")]
    BadAudioConfig { reason: &'static str },
    #[error("unknown {what} packet type {value} (0 = sequence header, 1 = frame, 2 = end of sequence)")]
    UnknownPacketType { what: &'static str, value: u8 },
    #[error("AAC frame of {0} bytes is larger than ADTS can carry (8184): the audio stream is corrupt")]
    AacFrameTooLarge(usize),
}

fn video_codec_name(id: u8) -> &'static str {
    match id {
        1 => "JPEG",
        2 => "Sorenson H.263",
        3 => "Screen video",
        4 => "On2 VP6",
        5 => "On2 VP6 with alpha",
        6 => "Screen video v2",
        7 => "H.264/AVC",
        12 => "HEVC, non-standard FLV",
        13 => "AV1, non-standard FLV",
        _ => "unknown",
    }
}

fn audio_format_name(format: u8) -> &'static str {
    match format {
        0 | 3 => "linear PCM",
        1 => "ADPCM",
        2 | 14 => "MP3",
        4..=6 => "Nellymoser",
        7 => "G.711 A-law",
        8 => "G.711 mu-law",
        9 => "enhanced RTMP audio",
        10 => "AAC",
        11 => "Speex",
        15 => "device-specific",
        _ => "unknown",
    }
}

fn aac_object_name(object_type: u8) -> &'static str {
    match object_type {
        1 => "AAC Main",
        2 => "AAC-LC",
        3 => "AAC SSR",
        4 => "AAC LTP",
        5 => "HE-AAC (SBR)",
        23 => "AAC-LD",
        29 => "HE-AACv2 (PS)",
        39 => "AAC-ELD",
        42 => "xHE-AAC (USAC)",
        _ => "not an AAC object type",
    }
}

/// Counters kept by [`FlvToTs`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RemuxStats {
    pub video_frames: u64,
    pub keyframes: u64,
    pub audio_frames: u64,
    /// Frames no decoder could use: before their sequence header, or (video) inter frames before the
    /// first keyframe after a sequence header.
    pub dropped_before_config: u64,
}

/// What an AVC sequence header says that the remuxer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AvcConfig {
    nal_length_size: usize,
    sps: Vec<Vec<u8>>,
    pps: Vec<Vec<u8>>,
}

/// What an ADTS header needs from the AudioSpecificConfig.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AacConfig {
    /// MPEG-4 audio object type, 1..=4 (ADTS stores it minus one in two bits).
    object_type: u8,
    sampling_index: u8,
    channels: u8,
}

/// An elementary-stream frame ready for the TS muxer.
enum Frame {
    Video { dts: u64, pts: u64, keyframe: bool, au: Vec<u8> },
    Audio { pts: u64, adts: Vec<u8> },
}

#[derive(Default)]
struct StartupHold {
    frames: Vec<Frame>,
    first_ms: Option<u32>,
    bytes: usize,
}

/// Remuxes one RTMP publisher's FLV video and audio tag bodies into MPEG-TS.
pub struct FlvToTs {
    avc: Option<AvcConfig>,
    aac: Option<AacConfig>,
    awaiting_keyframe: bool,
    /// Some until the stream set is settled (see [`STARTUP_HOLD_MS`]).
    hold: Option<StartupHold>,
    mux: TsMux,
    stats: RemuxStats,
}

impl Default for FlvToTs {
    fn default() -> Self {
        Self::new()
    }
}

impl FlvToTs {
    pub fn new() -> Self {
        Self {
            avc: None,
            aac: None,
            awaiting_keyframe: true,
            hold: Some(StartupHold::default()),
            mux: TsMux::new(),
            stats: RemuxStats::default(),
        }
    }

    pub fn stats(&self) -> RemuxStats {
        self.stats
    }

    /// One FLV VIDEODATA tag body (first byte: frame type <<4 | codec id; for AVC then AVCPacketType,
    /// 24-bit signed composition time, data) with the RTMP/FLV timestamp (ms, DTS). Appends whole
    /// 188-byte TS packets to `out`; on error `out` is left as it was.
    pub fn video(&mut self, timestamp_ms: u32, body: &[u8], out: &mut Vec<u8>) -> Result<(), FlvError> {
        let (&first, rest) = body.split_first().ok_or(FlvError::Truncated { what: "video tag header" })?;
        if first & 0x80 != 0 {
            // Enhanced RTMP: IsExHeader flag, then a FourCC instead of a codec id.
            let fourcc = rest.get(..4).ok_or(FlvError::Truncated { what: "enhanced RTMP video header" })?;
            let mut cc = [0; 4];
            cc.copy_from_slice(fourcc);
            return Err(FlvError::UnsupportedVideoFourCc(cc));
        }
        let (frame_type, codec) = (first >> 4, first & 0x0f);
        if codec != CODEC_AVC {
            return Err(FlvError::UnsupportedVideoCodec(codec));
        }
        if frame_type == 5 {
            // Video info/command frame (seek markers): no picture.
            return Ok(());
        }
        let Some((&[packet_type, c0, c1, c2], data)) = rest.split_first_chunk::<4>() else {
            return Err(FlvError::Truncated { what: "AVC packet header" });
        };
        match packet_type {
            0 => self.avc_sequence_header(data)?,
            1 => {
                // Composition time: SI24, PTS - DTS in ms (negative only from broken encoders).
                let cts = i32::from_be_bytes([c0, c1, c2, 0]) >> 8;
                self.avc_frame(timestamp_ms, cts, frame_type == 1 || frame_type == 4, data, out)?;
            }
            2 => {}
            value => return Err(FlvError::UnknownPacketType { what: "AVC", value }),
        }
        self.release_hold(timestamp_ms, out);
        Ok(())
    }

    /// One FLV AUDIODATA tag body (first byte: sound format<<4 | rate/size/type; AAC: then
    /// AACPacketType, data). Appends whole TS packets to `out`; on error `out` is left as it was.
    pub fn audio(&mut self, timestamp_ms: u32, body: &[u8], out: &mut Vec<u8>) -> Result<(), FlvError> {
        let (&first, rest) = body.split_first().ok_or(FlvError::Truncated { what: "audio tag header" })?;
        let format = first >> 4;
        if format != FORMAT_AAC {
            return Err(FlvError::UnsupportedAudioCodec(format));
        }
        let (&packet_type, data) = rest.split_first().ok_or(FlvError::Truncated { what: "AAC packet header" })?;
        match packet_type {
            0 => {
                // ffmpeg sends an empty one first when it learns the config only later: not an error.
                if !data.is_empty() {
                    self.aac = Some(parse_audio_specific_config(data)?);
                }
            }
            1 => self.aac_frame(timestamp_ms, data, out)?,
            value => return Err(FlvError::UnknownPacketType { what: "AAC", value }),
        }
        self.release_hold(timestamp_ms, out);
        Ok(())
    }

    fn avc_sequence_header(&mut self, data: &[u8]) -> Result<(), FlvError> {
        if data.is_empty() {
            return Ok(());
        }
        let config = parse_avc_config(data)?;
        if self.avc.as_ref() != Some(&config) {
            // A new encoder (restart, new resolution): its inter frames need its own IDR first.
            self.awaiting_keyframe = true;
            self.avc = Some(config);
        }
        Ok(())
    }

    fn avc_frame(&mut self, ts: u32, cts: i32, keyframe: bool, data: &[u8], out: &mut Vec<u8>) -> Result<(), FlvError> {
        let Some(config) = &self.avc else {
            self.stats.dropped_before_config += 1;
            return Ok(());
        };
        if self.awaiting_keyframe && !keyframe {
            self.stats.dropped_before_config += 1;
            return Ok(());
        }
        let Some(au) = to_annex_b(config, keyframe, data)? else {
            return Ok(());
        };
        self.awaiting_keyframe = false;
        self.stats.video_frames += 1;
        self.stats.keyframes += u64::from(keyframe);
        let dts = ms_to_90k(i64::from(ts));
        let pts = ms_to_90k(i64::from(ts) + i64::from(cts));
        self.emit(Frame::Video { dts, pts, keyframe, au }, ts, out);
        Ok(())
    }

    fn aac_frame(&mut self, ts: u32, data: &[u8], out: &mut Vec<u8>) -> Result<(), FlvError> {
        let Some(config) = self.aac else {
            self.stats.dropped_before_config += 1;
            return Ok(());
        };
        if data.is_empty() {
            return Ok(());
        }
        if data.len() > MAX_ADTS_PAYLOAD {
            return Err(FlvError::AacFrameTooLarge(data.len()));
        }
        let mut adts = Vec::with_capacity(ADTS_HEADER_LEN + data.len());
        adts.extend_from_slice(&adts_header(config, data.len()));
        adts.extend_from_slice(data);
        self.stats.audio_frames += 1;
        self.emit(Frame::Audio { pts: ms_to_90k(i64::from(ts)), adts }, ts, out);
        Ok(())
    }

    fn streams(&self) -> Streams {
        Streams { video: self.avc.is_some(), audio: self.aac.is_some() }
    }

    fn emit(&mut self, frame: Frame, ts: u32, out: &mut Vec<u8>) {
        match &mut self.hold {
            Some(hold) => {
                hold.first_ms.get_or_insert(ts);
                hold.bytes += match &frame {
                    Frame::Video { au, .. } => au.len(),
                    Frame::Audio { adts, .. } => adts.len(),
                };
                hold.frames.push(frame);
            }
            None => self.write(frame, out),
        }
    }

    fn write(&mut self, frame: Frame, out: &mut Vec<u8>) {
        let streams = self.streams();
        match frame {
            Frame::Video { dts, pts, keyframe, au } => self.mux.write_video(streams, dts, pts, keyframe, &au, out),
            Frame::Audio { pts, adts } => self.mux.write_audio(streams, pts, &adts, out),
        }
    }

    /// Ends the startup hold once the stream set is known (or it has waited long enough).
    fn release_hold(&mut self, ts: u32, out: &mut Vec<u8>) {
        let Some(hold) = &self.hold else { return };
        let Some(first) = hold.first_ms else { return };
        let both = self.avc.is_some() && self.aac.is_some();
        // wrapping_sub: a timestamp going backwards reads as a huge step and also ends the hold.
        let waited = ts.wrapping_sub(first) >= STARTUP_HOLD_MS;
        let full = hold.frames.len() >= STARTUP_HOLD_MAX_FRAMES || hold.bytes >= STARTUP_HOLD_MAX_BYTES;
        if !(both || waited || full) {
            return;
        }
        let frames = self.hold.take().map(|h| h.frames).unwrap_or_default();
        for frame in frames {
            self.write(frame, out);
        }
    }
}

/// FLV milliseconds to the 33-bit 90 kHz clock. u32 ms wrap at 2^32, and 2^32 * 90 is a multiple
/// of 2^33, so the TS clock stays continuous across the FLV wrap too.
fn ms_to_90k(ms: i64) -> u64 {
    (ms * 90).rem_euclid(crate::ts::TS_WRAP as i64) as u64
}

fn parse_avc_config(data: &[u8]) -> Result<AvcConfig, FlvError> {
    let bad = |reason| FlvError::BadAvcConfig { reason };
    let [version, _profile, _compat, _level, length_size, sps_count, rest @ ..] = data else {
        return Err(bad("shorter than its 6-byte fixed part"));
    };
    if *version != 1 {
        return Err(bad("configurationVersion is not 1"));
    }
    let mut rest = rest;
    let sps = parameter_sets(&mut rest, usize::from(sps_count & 0x1f), NAL_SPS)
        .ok_or(bad("an SPS entry is cut off or is not an SPS NAL unit"))?;
    let (&pps_count, mut rest) = rest.split_first().ok_or(bad("the PPS count is missing"))?;
    let pps = parameter_sets(&mut rest, usize::from(pps_count), NAL_PPS)
        .ok_or(bad("a PPS entry is cut off or is not a PPS NAL unit"))?;
    if sps.is_empty() || pps.is_empty() {
        return Err(bad("it carries no SPS or no PPS"));
    }
    Ok(AvcConfig { nal_length_size: usize::from(length_size & 0x03) + 1, sps, pps })
}

/// `count` 16-bit-length-prefixed NAL units of type `nal_type`, advancing `data` past them.
fn parameter_sets(data: &mut &[u8], count: usize, nal_type: u8) -> Option<Vec<Vec<u8>>> {
    let mut sets = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, rest) = data.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let (nal, rest) = rest.split_at_checked(len)?;
        if nal.first().map(|b| b & 0x1f) != Some(nal_type) {
            return None;
        }
        sets.push(nal.to_vec());
        *data = rest;
    }
    Some(sets)
}

/// Length-prefixed NAL units to one Annex B access unit: our AUD first (the encoder's own are
/// dropped), and at a keyframe the sequence header's SPS/PPS unless the frame carries both, so a
/// player joining at any keyframe can decode. None when the frame holds no NAL unit worth sending.
fn to_annex_b(config: &AvcConfig, keyframe: bool, data: &[u8]) -> Result<Option<Vec<u8>>, FlvError> {
    let n = config.nal_length_size;
    let mut nals = Vec::new();
    let (mut has_sps, mut has_pps) = (false, false);
    let mut rest = data;
    while !rest.is_empty() {
        let (len, tail) = rest.split_at_checked(n).ok_or(FlvError::Truncated { what: "AVC NAL unit length" })?;
        let len = len.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let (nal, tail) = tail.split_at_checked(len).ok_or(FlvError::Truncated { what: "AVC NAL unit" })?;
        rest = tail;
        match nal.first().map(|b| b & 0x1f) {
            None | Some(NAL_AUD) => continue,
            Some(NAL_SPS) => has_sps = true,
            Some(NAL_PPS) => has_pps = true,
            Some(_) => {}
        }
        nals.push(nal);
    }
    if nals.is_empty() {
        return Ok(None);
    }
    let inject = keyframe && !(has_sps && has_pps);
    let param_sets: &[Vec<u8>] = &[];
    let (sps, pps) = if inject { (&config.sps[..], &config.pps[..]) } else { (param_sets, param_sets) };
    let size = AUD.len()
        + sps.iter().chain(pps).map(|s| 4 + s.len()).sum::<usize>()
        + nals.iter().map(|s| 4 + s.len()).sum::<usize>();
    let mut au = Vec::with_capacity(size);
    au.extend_from_slice(&AUD);
    for nal in sps.iter().chain(pps).map(Vec::as_slice).chain(nals) {
        au.extend_from_slice(&START_CODE);
        au.extend_from_slice(nal);
    }
    Ok(Some(au))
}

/// Reads big-endian bit fields; None past the end.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self.data.get(self.pos / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Some(v)
    }

    fn object_type(&mut self) -> Option<u8> {
        let t = self.read(5)?;
        let t = if t == 31 { 32 + self.read(6)? } else { t };
        Some(t as u8)
    }

    /// samplingFrequencyIndex, resolving an explicit frequency to its index when it has one.
    fn sampling_index(&mut self) -> Option<Result<u8, FlvError>> {
        let index = self.read(4)?;
        if index != 15 {
            return Some(Ok(index as u8));
        }
        let rate = self.read(24)?;
        Some(
            AAC_RATES
                .iter()
                .position(|&r| r == rate)
                .map(|i| i as u8)
                .ok_or(FlvError::BadAudioConfig { reason: "an explicit sampling rate that ADTS cannot express" }),
        )
    }
}

fn parse_audio_specific_config(data: &[u8]) -> Result<AacConfig, FlvError> {
    let cut = || FlvError::BadAudioConfig { reason: "shorter than its fields" };
    let mut bits = Bits { data, pos: 0 };
    let mut object_type = bits.object_type().ok_or_else(cut)?;
    let sampling_index = bits.sampling_index().ok_or_else(cut)??;
    let channels = bits.read(4).ok_or_else(cut)? as u8;
    if object_type == 5 || object_type == 29 {
        // Explicit HE-AAC signalling: the first rate is the core's; ADTS carries the core AAC
        // stream and decoders find the SBR/PS data in it implicitly.
        let _extension_rate = bits.sampling_index().ok_or_else(cut)?;
        object_type = bits.object_type().ok_or_else(cut)?;
    }
    if !(1..=4).contains(&object_type) {
        return Err(FlvError::UnsupportedAacObjectType(object_type));
    }
    if usize::from(sampling_index) >= AAC_RATES.len() {
        return Err(FlvError::BadAudioConfig { reason: "a reserved sampling frequency index" });
    }
    if !(1..=7).contains(&channels) {
        return Err(FlvError::BadAudioConfig {
            reason: "channel configuration 0 (layout in a program config element) or reserved: set the encoder to mono or stereo",
        });
    }
    Ok(AacConfig { object_type, sampling_index, channels })
}

/// The 7-byte ADTS header (no CRC) for one raw AAC frame of `payload_len` bytes.
fn adts_header(c: AacConfig, payload_len: usize) -> [u8; 7] {
    let len = payload_len + ADTS_HEADER_LEN;
    [
        0xff,
        0xf1, // syncword, MPEG-4, layer 0, protection_absent
        ((c.object_type - 1) << 6) | (c.sampling_index << 2) | (c.channels >> 2),
        ((c.channels & 3) << 6) | (len >> 11) as u8,
        (len >> 3) as u8,
        ((len as u8 & 7) << 5) | 0x1f, // buffer fullness 0x7ff: variable bit rate
        0xfc,
    ]
}
