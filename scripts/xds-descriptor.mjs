// Build step: parses Envoy's xDS .proto files (shipped by @grpc/grpc-js-xds) once and writes
// them as a protobufjs JSON descriptor next to the compiled mesh/xds/protos.js, which loads
// it instead of parsing the .proto text at run time (see DESCRIPTOR_PATH there).
import { writeFileSync } from 'node:fs';
import { DESCRIPTOR_PATH, parseEnvoyProtos } from '../dist/mesh/xds/protos.js';

writeFileSync(DESCRIPTOR_PATH, JSON.stringify(parseEnvoyProtos().toJSON()));
