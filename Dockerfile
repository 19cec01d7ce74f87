# syntax=docker/dockerfile:1
# Build stage: install every dependency, compile TypeScript.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# npm install, not npm ci: @matrixai/quic 2.0.9 names optional macOS/Windows binaries that
# were never published, so npm ci rejects the lock file (see .ci/run).
RUN npm install --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY protocols ./protocols
COPY mesh ./mesh
RUN npx tsc -p tsconfig.build.json

# Runtime stage: production dependencies and the compiled output only.
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm install --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/dist/protocols ./dist/protocols
COPY --from=build /app/dist/mesh ./dist/mesh
USER node
# admin, outbound, inbound, inbound mesh (mTLS), TLS inbound; HTTP/3 listeners use UDP on their port
EXPOSE 15000 15001 15006 15008 15443 15443/udp
ENTRYPOINT ["node", "dist/src/cli.js"]
