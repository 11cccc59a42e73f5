// lib/packetbuffers.ts: recycled packet buffers and pooled random padding.
import { expect } from 'chai';
import { RELAY_BLOCK_BYTES, dropFreeBlocks, fillRandom, isRecycled, relayBlockStats, releasePacketBuffer, takePacketBuffer, takeRelayBuffer } from '../lib/packetbuffers.js';

describe('packet buffers (lib/packetbuffers.ts)', () => {
  it('recycles a large packet buffer once it is given back', () => {
    const first = takePacketBuffer(32_800);
    expect(first.length).to.equal(32_800);
    expect(isRecycled(first)).to.equal(true);
    releasePacketBuffer(first);
    const second = takePacketBuffer(20_000);
    expect(second.length).to.equal(20_000);
    expect(second.buffer, 'the block given back is reused').to.equal(first.buffer);
    // Not given back: the next one is a different block.
    expect(takePacketBuffer(20_000).buffer).to.not.equal(second.buffer);
  });

  it('recycles a relay block given back as a view of its written part, in its own pool', () => {
    const block = takeRelayBuffer();
    expect(block.length).to.equal(RELAY_BLOCK_BYTES);
    const written = block.subarray(0, 100);
    expect(isRecycled(written)).to.equal(true);
    releasePacketBuffer(written);
    expect(takePacketBuffer(32_800).buffer, 'not handed out as a packet buffer').to.not.equal(block.buffer);
    const again = takeRelayBuffer();
    expect(again.buffer, 'the relay block given back is reused').to.equal(block.buffer);
    expect(again.length, 'whole again').to.equal(RELAY_BLOCK_BYTES);
  });

  it('keeps up to 512 relay blocks free, so hundreds in use at once are made only once', () => {
    dropFreeBlocks();
    const before = relayBlockStats();
    const inUse = Array.from({ length: 600 }, () => takeRelayBuffer());
    expect(relayBlockStats().made - before.made).to.equal(600);
    for (const block of inUse) releasePacketBuffer(block);
    expect(relayBlockStats().free, 'the rest is left to the collector').to.equal(512);
    const again = Array.from({ length: 512 }, () => takeRelayBuffer());
    expect(relayBlockStats().made - before.made, 'none made for the second round').to.equal(600);
    for (const block of again) releasePacketBuffer(block);
    dropFreeBlocks();
    expect(relayBlockStats().free).to.equal(0);
  });

  it('lets go of every free block after a burst (dropFreeBlocks)', () => {
    const packet = takePacketBuffer(32_800);
    const relay = takeRelayBuffer();
    releasePacketBuffer(packet);
    releasePacketBuffer(relay);
    dropFreeBlocks();
    expect(takePacketBuffer(32_800).buffer).to.not.equal(packet.buffer);
    expect(takeRelayBuffer().buffer).to.not.equal(relay.buffer);
  });

  it('gives small and oversized packets buffers of their own, never recycled', () => {
    for (const length of [5, 4096, 10_000, 40_000]) {
      const buffer = takePacketBuffer(length);
      expect(buffer.length).to.equal(length);
      expect(isRecycled(buffer), `${length} bytes`).to.equal(false);
    }
    expect(isRecycled(Buffer.alloc(32_800)), 'a buffer from elsewhere').to.equal(false);
  });

  it('hands out random bytes once: no two fills repeat, also across a refill', () => {
    const seen = new Set<string>();
    const target = Buffer.alloc(16);
    // 20,000 x 16 bytes spans several 64 KiB refills.
    for (let i = 0; i < 20_000; i++) {
      fillRandom(target, 0, 16);
      seen.add(target.toString('hex'));
    }
    expect(seen.size).to.equal(20_000);
    const large = Buffer.alloc(70_000);
    fillRandom(large, 0, large.length);
    expect(large.subarray(60_000).equals(Buffer.alloc(10_000)), 'a fill larger than the block is random too').to.equal(false);
  });
});
