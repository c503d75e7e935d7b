package spec

// DecodeUnknown exposes decode to the external fuzz tests, which import
// spectest (and so cannot live in package spec).
var DecodeUnknown = decode
