// Sends its owner's camera pose to a worldweave gateway and shows the returned frame on a texture; or, as a rig, sends
// the owner actor's pose (the body) with several of its camera components and shows each camera's frame on its own
// texture (RigCameras, RigTextures; docs/sensors.md, "Rigs").
//
// Setup: add cppzmq (zmq.hpp + libzmq) and msgpack-c (header-only msgpack.hpp) to your module's
// Build.cs, run `worldweave serve --port 50051` and
// `worldweave gateway --zmq tcp://127.0.0.1:5555 --server 127.0.0.1:50051`, create a world (WorldId), add this
// component to an actor with a UCameraComponent, and bind FrameTexture to a material or UMG image. For a rig, name
// the owner's camera components in RigCameras (each with its image size) and bind RigTextures[i] to camera i's image:
// one "step" then carries the actor's pose and every camera's intrinsics and mount, memory is updated once for all
// of them, and each frame comes back with its camera_index.
// Wire schema: sim_clients/gateway/SCHEMA.md; convention "unreal": docs/conventions.md. The gateway converts:
// this component sends Unreal's own location (centimetres) and rotator (degrees); a rig camera's mount is its
// location and rotation relative to the actor, in the actor's axes (PackMount in the .cpp).

#pragma once

#include "Components/ActorComponent.h"
#include "CoreMinimal.h"

#include <memory>
#include <zmq.hpp>

#include "WorldweaveCameraComponent.generated.h"

class UCameraComponent;
class UTexture2D;

// Unreal's convention as worldweave.sim_clients.conventions.UNREAL states it
// (tests/test_engine_code.py checks these constants against the Python module).
namespace WorldweaveUnreal
{
	static constexpr const char* Convention = "unreal";
	// The gateway's schema major version, the envelope's "version" (sim_clients/gateway/SCHEMA.md).
	static constexpr int SchemaMajor = 2;
	// FMinimalViewInfo::FOV / UCameraComponent::FieldOfView is the horizontal field of view, in degrees.
	static constexpr const char* FovField = "fov_x_deg";
	// Unreal units are centimetres.
	static constexpr double MetresPerUnit = 0.01;
	// W: canonical world axes (x forward, y left, z up) of an Unreal vector (x forward, y right, z up).
	static constexpr double WorldToCanonical[3][3] = {{1.0, 0.0, 0.0}, {0.0, -1.0, 0.0}, {0.0, 0.0, 1.0}};
	// A: the camera's local axes (x forward, y right, z up) of an OpenCV camera vector (x right, y down, z forward).
	static constexpr double OpenCvToCamera[3][3] = {{0.0, 0.0, 1.0}, {1.0, 0.0, 0.0}, {0.0, -1.0, 0.0}};
}

// A camera of the rig: one of the owner's UCameraComponents, by name, and the image size to ask for.
USTRUCT(BlueprintType)
struct FWorldweaveRigCamera
{
	GENERATED_BODY()

	// The camera component's name on the owning actor.
	UPROPERTY(EditAnywhere, Category = "Worldweave")
	FName Camera;

	UPROPERTY(EditAnywhere, Category = "Worldweave")
	int32 Width = 640;

	UPROPERTY(EditAnywhere, Category = "Worldweave")
	int32 Height = 480;
};

UCLASS(ClassGroup = (Worldweave), meta = (BlueprintSpawnableComponent))
class UWorldweaveCameraComponent : public UActorComponent
{
	GENERATED_BODY()

public:
	UWorldweaveCameraComponent();

	UPROPERTY(EditAnywhere, Category = "Worldweave")
	FString GatewayAddress = TEXT("tcp://127.0.0.1:5555");

	UPROPERTY(EditAnywhere, Category = "Worldweave")
	FString WorldId = TEXT("demo");

	UPROPERTY(EditAnywhere, Category = "Worldweave")
	int32 Width = 640;

	UPROPERTY(EditAnywhere, Category = "Worldweave")
	int32 Height = 480;

	// "step" generates and remembers; "render" shows memory only (one camera only: only Step takes a rig).
	UPROPERTY(EditAnywhere, Category = "Worldweave")
	FString RequestType = TEXT("step");

	// A rig: the owner's camera components stepped together on the actor's pose, in the order of their frames'
	// camera_index. Empty: one camera (the owner's first UCameraComponent, Width x Height, FrameTexture).
	UPROPERTY(EditAnywhere, Category = "Worldweave")
	TArray<FWorldweaveRigCamera> RigCameras;

	// With a rig: camera i's latest frame (BGRA8) in RigTextures[i], updated on the game thread.
	UPROPERTY(BlueprintReadOnly, Category = "Worldweave")
	TArray<UTexture2D*> RigTextures;

	// The latest frame (BGRA8), updated on the game thread.
	UPROPERTY(BlueprintReadOnly, Category = "Worldweave")
	UTexture2D* FrameTexture = nullptr;

	// What worldweave sees: camera centre (metres, world Z up) and viewing direction, canonical axes (with a rig, the
	// actor's: the body).
	UPROPERTY(VisibleAnywhere, Category = "Worldweave")
	FVector CanonicalPosition;

	UPROPERTY(VisibleAnywhere, Category = "Worldweave")
	FVector CanonicalForward;

	UPROPERTY(VisibleAnywhere, Category = "Worldweave")
	float LastCoverage = 0.f;

protected:
	virtual void BeginPlay() override;
	virtual void EndPlay(const EEndPlayReason::Type Reason) override;
	virtual void TickComponent(float DeltaTime, ELevelTick TickType, FActorComponentTickFunction* ThisTickFunction) override;

private:
	void SendHello();
	void SendPose(const UCameraComponent& Camera);
	void SendRig(const AActor& Body);
	// Sets CanonicalPosition and CanonicalForward from an Unreal location (cm) and rotator (degrees).
	void ShowCanonical(const FVector& Location, const FRotator& Rotator);
	// Shows the reply's frame; returns whether the request is answered (a step: its last_in_request reply).
	bool HandleReply(const zmq::message_t& Message);

	// The owner's camera components named in RigCameras, in order; false (logged) when one is missing.
	bool FindRigCameras();

	UPROPERTY()
	TArray<UCameraComponent*> RigCameraComponents;
	zmq::context_t Context;
	std::unique_ptr<zmq::socket_t> Socket;
	uint64 NextId = 1;
	bool bWaiting = false;
};
