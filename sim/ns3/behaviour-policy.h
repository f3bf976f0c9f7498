/*
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Behaviour policies for recording training data (models/): each one decides
 * a packet at enqueue from the state record the data path exported, and its
 * decision reaches the core as a verdict, the way a model's would.  They exist
 * so that the offline-RL dataset holds more than DualPI2's behaviour.
 *
 *   pie      RFC 8033 PIE (no burst allowance): one drop/mark probability
 *            from the queueing delay, updated every 15 ms, for both queues;
 *            L4S packets are marked, never dropped.
 *   explore  DualPI2, except that a share of classic packets (ExploreRate)
 *            gets an action drawn uniformly from enqueue, drop and mark.
 *
 * Sim-only code (floating point is fine here; the core stays integer).
 */

#ifndef AQM_BEHAVIOUR_POLICY_H
#define AQM_BEHAVIOUR_POLICY_H

#include <cstdint>
#include <memory>
#include <random>
#include <string>

extern "C" {
#include "aqm_channel.h"
}

namespace ns3
{

class BehaviourPolicy
{
  public:
    /// Returned by Decide() when DualPI2 should decide the packet.
    static constexpr int kDualPi2 = -1;

    virtual ~BehaviourPolicy() = default;
    /// An AQM_ACT_* for this packet, or kDualPi2. now_ns is the core's clock.
    virtual int Decide(const struct aqm_state_rec& s, uint64_t now_ns) = 0;

    /// "pie" or "explore" (nullptr for "dualpi2"); throws on anything else.
    static std::unique_ptr<BehaviourPolicy> Create(const std::string& name, double exploreRate,
                                                   uint32_t seed);
};

class PieBehaviour : public BehaviourPolicy
{
  public:
    explicit PieBehaviour(uint32_t seed);
    int Decide(const struct aqm_state_rec& s, uint64_t now_ns) override;
    double Probability() const
    {
        return m_prob;
    }

  private:
    void Update(double qdelayS);

    std::mt19937_64 m_rng;
    double m_prob = 0;
    double m_qdelayOldS = 0;
    uint64_t m_nextUpdateNs = 0;
};

class ExploreBehaviour : public BehaviourPolicy
{
  public:
    ExploreBehaviour(double rate, uint32_t seed);
    int Decide(const struct aqm_state_rec& s, uint64_t now_ns) override;

  private:
    std::mt19937_64 m_rng;
    double m_rate;
};

} // namespace ns3

#endif
