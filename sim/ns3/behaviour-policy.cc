/*
 * SPDX-License-Identifier: BSD-2-Clause
 */

#include "behaviour-policy.h"

#include <stdexcept>

namespace ns3
{

std::unique_ptr<BehaviourPolicy>
BehaviourPolicy::Create(const std::string& name, double exploreRate, uint32_t seed)
{
    if (name == "dualpi2")
        return nullptr;
    if (name == "pie")
        return std::make_unique<PieBehaviour>(seed);
    if (name == "explore")
        return std::make_unique<ExploreBehaviour>(exploreRate, seed);
    throw std::invalid_argument("unknown behaviour policy " + name);
}

// RFC 8033 defaults: 15 ms target and update interval, alpha 0.125 and beta
// 1.25 per second, ECN marking while the probability is at most 10 %.
static const double kTargetS = 0.015;
static const uint64_t kTupdateNs = 15000000;
static const double kAlpha = 0.125;
static const double kBeta = 1.25;
static const double kMarkEcnTh = 0.1;
static const uint32_t kMtu = 1500;

PieBehaviour::PieBehaviour(uint32_t seed)
    : m_rng(0x9e3779b97f4a7c15ull ^ seed)
{
}

void
PieBehaviour::Update(double qdelayS)
{
    // Small probabilities move in small steps (RFC 8033, section 4.2).
    double scale = 1;
    if (m_prob < 0.000001)
        scale = 1.0 / 2048;
    else if (m_prob < 0.00001)
        scale = 1.0 / 512;
    else if (m_prob < 0.0001)
        scale = 1.0 / 128;
    else if (m_prob < 0.001)
        scale = 1.0 / 32;
    else if (m_prob < 0.01)
        scale = 1.0 / 8;
    else if (m_prob < 0.1)
        scale = 1.0 / 2;
    double delta = scale * (kAlpha * (qdelayS - kTargetS) + kBeta * (qdelayS - m_qdelayOldS));
    if (delta > 0.02 && m_prob >= 0.1)
        delta = 0.02;
    m_prob += delta;
    if (qdelayS == 0 && m_qdelayOldS == 0)
        m_prob *= 0.98;
    m_prob = m_prob < 0 ? 0 : (m_prob > 1 ? 1 : m_prob);
    m_qdelayOldS = qdelayS;
}

int
PieBehaviour::Decide(const struct aqm_state_rec& s, uint64_t now_ns)
{
    // Queueing delay from the backlog and the recent departure rate, as
    // RFC 8033 does without timestamps; the head-of-line sojourn until a
    // rate is known.
    uint64_t backlog = static_cast<uint64_t>(s.backlog_bytes[0]) + s.backlog_bytes[1];
    double hol = (s.sojourn_ns[0] > s.sojourn_ns[1] ? s.sojourn_ns[0] : s.sojourn_ns[1]) * 1e-9;
    double qdelayS = s.rate_bps > 0 ? static_cast<double>(backlog) / s.rate_bps : hol;
    if (m_nextUpdateNs == 0)
        m_nextUpdateNs = now_ns + kTupdateNs;
    while (now_ns >= m_nextUpdateNs)
    {
        Update(qdelayS);
        m_nextUpdateNs += kTupdateNs;
    }
    if ((m_qdelayOldS < kTargetS / 2 && m_prob < 0.2) || backlog <= 2 * kMtu)
        return AQM_ACT_ENQUEUE;
    if (std::uniform_real_distribution<double>(0, 1)(m_rng) >= m_prob)
        return AQM_ACT_ENQUEUE;
    // L4S traffic (ECT(1), CE) is marked, never dropped, as a DualQ's L queue does.
    if (s.queue == AQM_QUEUE_L)
        return AQM_ACT_MARK;
    return s.ecn != AQM_ECN_NOT_ECT && m_prob <= kMarkEcnTh ? AQM_ACT_MARK : AQM_ACT_DROP;
}

ExploreBehaviour::ExploreBehaviour(double rate, uint32_t seed)
    : m_rng(0xc2b2ae3d27d4eb4full ^ seed),
      m_rate(rate)
{
    if (!(rate >= 0 && rate <= 1))
        throw std::invalid_argument("explore rate must be within [0, 1]");
}

int
ExploreBehaviour::Decide(const struct aqm_state_rec& s, uint64_t)
{
    // Only classic packets are explored: dropping L4S traffic outside overload is
    // never a behaviour worth learning, and a model imitates what it is shown.
    if (s.queue != AQM_QUEUE_C || std::uniform_real_distribution<double>(0, 1)(m_rng) >= m_rate)
        return kDualPi2;
    return static_cast<int>(std::uniform_int_distribution<uint32_t>(0, 2)(m_rng));
}

} // namespace ns3
