/*
 * codesign MCU protocol: every constant host and firmware must agree on lives here.
 *
 * Text commands in the style of the MLPerf Tiny runner: ASCII, arguments separated by one
 * space, terminated by '%'. Each reply line starts with "m-" (information) or "e-" (error)
 * and ends with "\r\n"; every command ends with the frame check line "m-fcs-[XXXXXXXX]" and
 * then "m-ready". XXXXXXXX is the CRC32 of the command line exactly as the device received it,
 * the '%', and every reply byte before the m-fcs line: a reply corrupted on the wire, or the
 * answer to a command corrupted on its way in, fails the host's check and is retried.
 * toolchain/mcu/protocol.py mirrors these values and a test checks that they agree.
 */
#ifndef CS_PROTOCOL_H
#define CS_PROTOCOL_H

/* Bumped on any incompatible change; the host refuses to talk to another version.
 * 2: replies end with m-fcs; models are identified by their id (the CRC32 of the blob
 *    without its trailer), which mload announces, commit names and profile reports. */
#define CS_PROTOCOL_VERSION 2
#define CS_FW_VERSION "0.1.0"

#if !defined(CS_PROTOCOL_VERSION) || !defined(CS_FW_VERSION)
#error "protocol.h must define CS_PROTOCOL_VERSION and CS_FW_VERSION"
#endif

#define CS_TERMINATOR '%'
#define CS_PREFIX_OK "m-"
#define CS_PREFIX_ERR "e-"
#define CS_READY "m-ready"
#define CS_FCS "m-fcs-"        /* m-fcs-[XXXXXXXX], the line before m-ready */
#define CS_EOL "\r\n"

/* Longest command line in bytes, '%' excluded; longer lines are discarded with an error. */
#ifndef CS_LINE_MAX
#define CS_LINE_MAX 512
#endif

/* MLPerf Tiny compatible commands. */
#define CS_CMD_NAME "name"         /* name%            -> m-name-dut-[codesign-<port>] */
#define CS_CMD_PROFILE "profile"   /* profile%         -> m-profile-[..] m-model-[id=..;..] */
#define CS_CMD_DB "db"             /* db load N% / db HHHH..% : input tensor, int8 */
#define CS_CMD_INFER "infer"       /* infer N W% -> m-infer-done-[n=N;icount=T;incrc=X] */
#define CS_CMD_RESULTS "results"   /* results% -> m-results-[..] m-argmax-[k] m-crc-[XXXXXXXX] */

/* codesign extensions. */
#define CS_CMD_PING "ping"         /* ping TOKEN%      -> m-pong-TOKEN (resynchronisation) */
#define CS_CMD_VERSION "version"   /* version%         -> m-version-[proto=..;fw=..;...] */
#define CS_CMD_MLOAD "mload"       /* mload NBYTES ID%       -> m-mload-[expecting NBYTES] */
#define CS_CMD_MDATA "mdata"       /* mdata OFFSET HEX CRC%  -> m-ack-END   (CRC of off+data) */
#define CS_CMD_COMMIT "commit"     /* commit ID%       -> m-commit-[id=XXXXXXXX] (idempotent) */
#define CS_CMD_SELFCHECK "selfcheck" /* selfcheck%     -> m-selfcheck-[n=K;crc=..;icount=T] */
#define CS_CMD_CALIB "calib"       /* calib N%         -> m-calib-[n=N;icount=T] */
/* Whole-model images only (-DCS_WHOLE_MODEL; a CSD0 blob committed): raw text in. */
#define CS_CMD_TLOAD "tload"       /* tload NBYTES CRC%      -> m-tload-[expecting NBYTES] */
#define CS_CMD_TDATA "tdata"       /* tdata OFFSET HEX CRC%  -> m-ack-END (as mdata) */
#define CS_CMD_TINFER "tinfer"     /* tinfer% -> m-tinfer-done-[tokens=N;icount=T;incrc=X] */

/* Bounds that keep a fuzzed or corrupted command from hanging the device. */
#define CS_INFER_MAX 10000u
#define CS_CALIB_MAX 10000000u
#ifndef CS_TEXT_MAX
#define CS_TEXT_MAX 2048u          /* longest raw text tload accepts, bytes */
#endif

/* Weights blob ("CSGN"): see toolchain/mcu/blob.py for the authoritative layout. */
#define CS_BLOB_MAGIC 0x4E475343u /* "CSGN" little-endian */
#define CS_BLOB_VERSION 1
#define CS_ACT_NONE 0
#define CS_ACT_RELU 1

#endif /* CS_PROTOCOL_H */
