// Package webassets holds third-party browser files that both the origin
// and coop-peer embed, so the binaries carry one vendored copy and no page
// links a CDN (viewers and tests may be offline). It imports nothing of the
// module: any product package may use it.
package webassets

import _ "embed"

// HLSVersion is the vendored hls.js release (npm package hls.js).
const HLSVersion = "1.7.4"

// HLSJS is hls.min.js of hls.js HLSVersion (Apache-2.0; see
// hls.js.LICENSE beside it).
//
//go:embed hls.min.js
var HLSJS []byte

// HLSLicense is the licence text of hls.js.
//
//go:embed hls.js.LICENSE
var HLSLicense []byte
